//! The production store: SQL Server 2025 over TDS (tiberius on tokio).
//!
//! - **Statements**: every one is a named block of `sql/queries/store.sql`, compiled in
//!   (`mssql/statements.rs`); nothing here writes SQL. The schema is `sql/schema/*.sql`, installed
//!   by an operator (sql/README.md); the store refuses a database of another schema version, or
//!   one without `READ_COMMITTED_SNAPSHOT` (readers would wait for every open ingest).
//! - **Connections**: by `mssql://user:password@host:port/database?...` or an ADO.NET string
//!   (`mssql/config.rs`); TLS required unless `Encrypt=false`, `TrustServerCertificate` honoured.
//!   The store keeps one connection behind a mutex for reads and small writes; each
//!   [`ModelWriter`] opens its own, whose one transaction is the whole ingest.
//! - **Packet size**: tiberius 0.12.3 always asks for 4 KB packets in LOGIN7 and has no option
//!   to ask for more (the option is tiberius PR 400, not released), so bulk loads run at 4 KB
//!   packets until tiberius ships it.
//! - **Values tiberius cannot carry** (`mssql/text.rs`): geometry goes in as WKT through
//!   `geometry::STGeomFromText` and comes out as `AsBinaryZM()` VARBINARY; embeddings go in as
//!   JSON text cast to `VECTOR(1998)`; batches of hashes travel as JSON arrays for `OPENJSON`.
//! - **Atoms**: new atoms are bulk-loaded (TDS bulk load) into a per-connection `#TensorAtomStage`
//!   and moved into `dbo.TensorAtoms` by one statement, inside the ingest's transaction; atoms
//!   already stored are found first and their payloads never sent.
//! - **Retries**: work that fails with a deadlock (1205) or Azure's "try again" errors, which
//!   the server rolled back, runs again with exponential backoff; work whose connection dropped
//!   runs again only when it is idempotent (reads, writes keyed by `RequestKey` and the like) or
//!   had not been sent. An ingest is one transaction: if it fails, nothing of it is stored, and
//!   running it again is safe (`begin_model` reports a model already committed). A commit whose
//!   acknowledgement is lost is reported, not retried.
//! - **Crash safety**: a killed daemon's connection closes and SQL Server rolls its open
//!   transaction back: no model row, no atom, no reference count changed.

mod config;
mod statements;
mod text;

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use hartonomous_loader::atom::weights_root;
use hartonomous_loader::Hash256;
use tiberius::{ColumnData, IntoSql, Query, QueryItem, Row, TokenRow};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use self::config::{hint, transient, ConnectOptions, Transience};
use self::statements::*;
use self::text::{hashes_json, linestring_wkt, signature_wkt, vector_json};
use super::verify::{check_atom, check_geometry, check_layer, check_model, AtomCheck};
use super::{
    db_int,
    AtomRecord, AtomUse, BeginModel, ContentAtom, ContentAtomId, ContentAtomRow, Embedding, EmbeddingWatermark, StoredEmbedding, FetchedAtom, GraphNode, LayerAtom, LayerId,
    LayerRecord, LayerRow, Lineage, LineageEdge, ModelId, ModelLineage, ModelMaterial, ModelRow, ModelSeal, ModelStatus, ModelWriter, Neighbor,
    NewModel, NewRequest, PutAtomsOutcome, RemoveOutcome, RequestCompletion, RequestId, Result, RunStatus, StepRecord,
    Store, StoreError, UsageRecord, VerifyReport, FETCH_BATCH_ATOMS, MAX_EMBEDDING_DIMENSION,
    AccessRule, ApiKeyRow, GovernanceRows, NewAccessRule, NewApiKey, OperationRate, RuleEffect, TenantSettings, UsageQuery, UsageRow,
};

/// The schema version (`dbo.SchemaVersion`) this build reads and writes: `sql/schema/004_*.sql`.
pub const SCHEMA_VERSION: i64 = 4;

/// The script that brings a database to each schema version, in order (sql/README.md,
/// "Installing the schema").
const SCHEMA_SCRIPTS: [(i64, &str); 4] = [
    (1, "sql/schema/001_core.sql"),
    (2, "sql/schema/002_lineage.sql"),
    (3, "sql/schema/003_model_lineage.sql"),
    (4, "sql/schema/004_governance.sql"),
];

/// What to run against a database at schema version `found` (older than this build's): the
/// scripts after it, in order.
fn upgrade_advice(found: i64) -> String {
    let scripts: Vec<&str> = SCHEMA_SCRIPTS.iter().filter(|(v, _)| *v > found).map(|(_, path)| *path).collect();
    format!(
        "its Hartonomous schema is at version {found}, this hartonomous needs {SCHEMA_VERSION}: run {} against it, \
         in this order, with sqlcmd -b (sql/README.md, \"Installing the schema\")",
        scripts.join(", then ")
    )
}

/// How long opening a TCP connection and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Tries of one piece of work, the first included.
const ATTEMPTS: u32 = 4;
/// Backoff before the second try; each further try waits four times longer (0.2, 0.8, 3.2 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

type Client = tiberius::Client<Compat<TcpStream>>;

/// Where the store is, for connecting and for messages.
struct Ctx {
    options: ConnectOptions,
    location: String,
}

/// A failure inside a piece of work, before it becomes a [`StoreError`]: database failures keep
/// what retrying needs to know.
enum Fail {
    Db {
        statement: &'static str,
        /// Boxed to keep every `Result<_, Fail>` small.
        source: Box<tiberius::error::Error>,
        /// Failed while connecting: nothing of the work was sent.
        connecting: bool,
    },
    Store(StoreError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

fn db(statement: &'static str) -> impl FnOnce(tiberius::error::Error) -> Fail {
    move |source| Fail::Db { statement, source: Box::new(source), connecting: false }
}

impl Ctx {
    fn invalid(&self, what: String) -> Fail {
        Fail::Store(StoreError::InvalidRecord { location: self.location.clone(), what })
    }

    /// The error a caller sees. Our own THROWs in store.sql become the variants they mean.
    fn error(&self, fail: Fail) -> StoreError {
        let location = self.location.clone();
        match fail {
            Fail::Store(e) => e,
            Fail::Db { source, statement, .. } if server_code(&source) == Some(50011) => StoreError::Damaged {
                location,
                what: format!("{} ({statement})", server_message(&source)),
            },
            Fail::Db { source, .. } if matches!(server_code(&source), Some(50021 | 50030 | 50040)) => {
                StoreError::InvalidRecord { location, what: server_message(&source).to_string() }
            }
            Fail::Db { statement, source, .. } => StoreError::Mssql { hint: hint(&source), location, statement, source },
        }
    }

    /// Whether work that failed so may run again.
    fn retryable(fail: &Fail, idempotent: bool) -> bool {
        match fail {
            Fail::Db { source, connecting, .. } => match transient(source) {
                Transience::RolledBack => true,
                Transience::ConnectionLost => *connecting || idempotent,
                Transience::Permanent => false,
            },
            Fail::Store(_) => false,
        }
    }
}

fn server_code(e: &tiberius::error::Error) -> Option<u32> {
    match e {
        tiberius::error::Error::Server(t) => Some(t.code()),
        _ => None,
    }
}

fn server_message(e: &tiberius::error::Error) -> &str {
    match e {
        tiberius::error::Error::Server(t) => t.message(),
        _ => "",
    }
}

fn backoff(tries: u32) -> Duration {
    FIRST_BACKOFF * 4u32.pow(tries.saturating_sub(1))
}

/// Opens a connection, follows one routing redirect (Azure SQL's gateway), sets the session
/// options every statement relies on.
async fn connect(ctx: &Ctx) -> Result<Client, Fail> {
    let failed = |source| Fail::Db { statement: "connect", source: Box::new(source), connecting: true };
    let timed_out = || failed(tiberius::error::Error::Io { kind: std::io::ErrorKind::TimedOut, message: "connecting took over 15 s".into() });
    let mut config = ctx.options.config();
    for _ in 0..2 {
        let login = async {
            let tcp = TcpStream::connect(config.get_addr()).await?;
            tcp.set_nodelay(true)?;
            Client::connect(config.clone(), tcp.compat_write()).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, login).await.map_err(|_| timed_out())? {
            Ok(mut client) => {
                simple(&mut client, SESSION_OPTIONS).await.map_err(|f| match f {
                    Fail::Db { statement, source, .. } => Fail::Db { statement, source, connecting: true },
                    other => other,
                })?;
                return Ok(client);
            }
            Err(tiberius::error::Error::Routing { host, port }) => {
                config.host(&host);
                config.port(port);
            }
            Err(e) => return Err(failed(e)),
        }
    }
    Err(failed(tiberius::error::Error::Protocol("the server redirected the connection twice".into())))
}

/// Runs a plain batch (no parameters, not through sp_executesql) and returns its rows.
async fn simple(c: &mut Client, st: Statement) -> Result<Vec<Vec<Row>>, Fail> {
    debug_assert_eq!(st.params, 0, "{} takes parameters: this is a bug", st.name);
    let stream = c.simple_query(st.sql()).await.map_err(db(st.name))?;
    stream.into_results().await.map_err(db(st.name))
}

/// A parameterised statement being bound; sends with as many parameters as the block takes.
struct Call {
    st: Statement,
    query: Query<'static>,
    bound: usize,
}

fn call(st: Statement) -> Call {
    Call { st, query: Query::new(st.sql()), bound: 0 }
}

impl Call {
    fn bind(mut self, value: impl IntoSql<'static> + 'static) -> Self {
        self.query.bind(value);
        self.bound += 1;
        self
    }

    fn checked(self) -> (Query<'static>, &'static str) {
        assert_eq!(
            self.bound, self.st.params,
            "{} takes {} parameters but {} were bound: this is a bug",
            self.st.name, self.st.params, self.bound
        );
        (self.query, self.st.name)
    }

    /// The rows of the block's first result set.
    async fn rows(self, c: &mut Client) -> Result<Vec<Row>, Fail> {
        let (query, name) = self.checked();
        let stream = query.query(c).await.map_err(db(name))?;
        stream.into_first_result().await.map_err(db(name))
    }

    /// The block's one result row.
    async fn row(self, c: &mut Client) -> Result<Row, Fail> {
        let name = self.st.name;
        self.rows(c).await?.into_iter().next().ok_or_else(|| Fail::Db {
            statement: name,
            source: Box::new(tiberius::error::Error::Protocol("the statement returned no row".into())),
            connecting: false,
        })
    }

    /// Every result set of the block, empty ones included, in order. (tiberius's own
    /// `into_results` drops an empty result set that follows another one.)
    async fn result_sets(self, c: &mut Client) -> Result<Vec<Vec<Row>>, Fail> {
        let (query, name) = self.checked();
        let mut stream = query.query(c).await.map_err(db(name))?;
        let mut sets: Vec<Vec<Row>> = Vec::new();
        while let Some(item) = stream.try_next().await.map_err(db(name))? {
            match (item, sets.last_mut()) {
                (QueryItem::Metadata(_), _) => sets.push(Vec::new()),
                (QueryItem::Row(row), Some(set)) => set.push(row),
                (QueryItem::Row(row), None) => sets.push(vec![row]),
            }
        }
        Ok(sets)
    }

    async fn exec(self, c: &mut Client) -> Result<(), Fail> {
        let (query, name) = self.checked();
        query.execute(c).await.map_err(db(name))?;
        Ok(())
    }
}

/// Reads the columns of one row, naming the statement in any conversion error.
struct Cols<'r> {
    row: &'r Row,
    st: &'static str,
}

fn cols(row: &Row, st: Statement) -> Cols<'_> {
    Cols { row, st: st.name }
}

impl<'r> Cols<'r> {
    fn bad(&self, i: usize, what: &str) -> Fail {
        let column = self.row.columns().get(i).map_or("?", |c| c.name());
        Fail::Db {
            statement: self.st,
            source: Box::new(tiberius::error::Error::Conversion(format!("column {i} ({column}): {what}").into())),
            connecting: false,
        }
    }

    fn cell(&self, i: usize) -> Result<&'r ColumnData<'static>, Fail> {
        self.row.cells().nth(i).map(|(_, d)| d).ok_or_else(|| self.bad(i, "missing"))
    }

    fn opt_int(&self, i: usize) -> Result<Option<i64>, Fail> {
        Ok(match self.cell(i)? {
            ColumnData::U8(v) => v.map(i64::from),
            ColumnData::I16(v) => v.map(i64::from),
            ColumnData::I32(v) => v.map(i64::from),
            ColumnData::I64(v) => *v,
            ColumnData::Bit(v) => v.map(i64::from),
            other => return Err(self.bad(i, &format!("expected an integer, got {other:?}"))),
        })
    }

    fn int(&self, i: usize) -> Result<i64, Fail> {
        self.opt_int(i)?.ok_or_else(|| self.bad(i, "NULL where a number was expected"))
    }

    fn uint(&self, i: usize) -> Result<u64, Fail> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| self.bad(i, &format!("{v} is negative")))
    }

    fn opt_uint(&self, i: usize) -> Result<Option<u64>, Fail> {
        self.opt_int(i)?.map(|v| u64::try_from(v).map_err(|_| self.bad(i, &format!("{v} is negative")))).transpose()
    }

    /// An HTTP status code.
    fn status(&self, i: usize) -> Result<u16, Fail> {
        let v = self.int(i)?;
        u16::try_from(v).map_err(|_| self.bad(i, &format!("{v} is not an HTTP status")))
    }

    fn opt_float(&self, i: usize) -> Result<Option<f64>, Fail> {
        Ok(match self.cell(i)? {
            ColumnData::F32(v) => v.map(f64::from),
            ColumnData::F64(v) => *v,
            other => return Err(self.bad(i, &format!("expected a float, got {other:?}"))),
        })
    }

    fn float(&self, i: usize) -> Result<f64, Fail> {
        self.opt_float(i)?.ok_or_else(|| self.bad(i, "NULL where a number was expected"))
    }

    fn opt_str(&self, i: usize) -> Result<Option<&'r str>, Fail> {
        match self.cell(i)? {
            ColumnData::String(v) => Ok(v.as_deref()),
            other => Err(self.bad(i, &format!("expected text, got {other:?}"))),
        }
    }

    fn str(&self, i: usize) -> Result<&'r str, Fail> {
        self.opt_str(i)?.ok_or_else(|| self.bad(i, "NULL where text was expected"))
    }

    fn string(&self, i: usize) -> Result<String, Fail> {
        self.str(i).map(str::to_string)
    }

    fn opt_bytes(&self, i: usize) -> Result<Option<&'r [u8]>, Fail> {
        match self.cell(i)? {
            ColumnData::Binary(v) => Ok(v.as_deref()),
            other => Err(self.bad(i, &format!("expected bytes, got {other:?}"))),
        }
    }

    fn bytes(&self, i: usize) -> Result<&'r [u8], Fail> {
        self.opt_bytes(i)?.ok_or_else(|| self.bad(i, "NULL where bytes were expected"))
    }

    fn opt_hash(&self, i: usize) -> Result<Option<Hash256>, Fail> {
        self.opt_bytes(i)?
            .map(|b| b.try_into().map(Hash256).map_err(|_| self.bad(i, &format!("{} bytes is not a SHA-256", b.len()))))
            .transpose()
    }

    fn hash(&self, i: usize) -> Result<Hash256, Fail> {
        self.opt_hash(i)?.ok_or_else(|| self.bad(i, "NULL where a hash was expected"))
    }
}

/// The first `dimension` numbers of a stored `VECTOR(1998)` read as JSON text (the rest are the
/// zero padding).
fn padded_vector(json: &str, dimension: usize) -> Result<Vec<f32>, String> {
    let mut values: Vec<f32> = serde_json::from_str(json).map_err(|e| format!("not a JSON array of numbers: {e}"))?;
    if values.len() < dimension {
        return Err(format!("{} numbers where Dimension says {dimension}", values.len()));
    }
    values.truncate(dimension);
    Ok(values)
}

/// A row of `list_models`, `model_by_id` or `find_models`.
fn model_row(row: &Row, st: Statement) -> Result<ModelRow, Fail> {
    let r = cols(row, st);
    let status = r.str(11)?;
    Ok(ModelRow {
        id: ModelId(r.int(0)?),
        name: r.string(1)?,
        version: r.string(2)?,
        architecture: r.string(3)?,
        format: r.string(4)?,
        tokenizer_kind: r.string(5)?,
        weights_root: r.opt_hash(6)?,
        source_file_hash: r.opt_hash(7)?,
        parameter_count: r.uint(8)?,
        tensor_count: r.uint(9)?,
        atom_bytes: r.uint(10)?,
        status: ModelStatus::parse(status).ok_or_else(|| r.bad(11, &format!("unknown model status {status:?}")))?,
        created_at: r.string(12)?,
        parent: r.opt_int(13)?.map(ModelId),
        derived_by: r.opt_str(14)?.map(str::to_string),
    })
}


/// Runs a piece of work on the store's shared connection, connecting first if needed, and
/// runs it again after a transient failure (see the module documentation). On any failure the
/// connection's transaction is rolled back, or the connection dropped.
macro_rules! attempt {
    ($self:ident, idempotent: $idempotent:expr, |$c:ident| $body:block) => {{
        let mut tries = 0u32;
        loop {
            let mut guard = $self.conn.lock().await;
            let result: Result<_, Fail> = async {
                if guard.is_none() {
                    *guard = Some(connect(&$self.ctx).await?);
                }
                let $c: &mut Client = guard.as_mut().expect("connected above");
                $body
            }
            .await;
            match result {
                Ok(value) => break Ok(value),
                Err(fail) => {
                    let lost = matches!(&fail, Fail::Db { source, .. } if transient(source) == Transience::ConnectionLost);
                    if lost {
                        *guard = None;
                    } else if let Some(c) = guard.as_mut() {
                        if simple(c, ROLLBACK_TRANSACTION).await.is_err() {
                            *guard = None;
                        }
                    }
                    drop(guard);
                    tries += 1;
                    if tries < ATTEMPTS && Ctx::retryable(&fail, $idempotent) {
                        tokio::time::sleep(backoff(tries)).await;
                        continue;
                    }
                    break Err($self.ctx.error(fail));
                }
            }
        }
    }};
}

/// The SQL Server store.
pub struct MssqlStore {
    ctx: Arc<Ctx>,
    conn: Mutex<Option<Client>>,
}

impl MssqlStore {
    /// Connects to the server `url` names (a `mssql://` URL or an ADO.NET string) and checks its
    /// schema. The error names the server, never the password.
    pub async fn open(url: &str) -> Result<Self> {
        let options = ConnectOptions::parse(url).map_err(|reason| StoreError::Unsupported {
            url: super::mask_secrets(url),
            reason: format!("not a usable SQL Server connection string: {reason}"),
        })?;
        let ctx = Arc::new(Ctx { location: options.location(), options });
        let store = Self { ctx, conn: Mutex::new(None) };
        let (version, snapshot) = attempt!(store, idempotent: true, |c| {
            let results = simple(c, DATABASE_OPTIONS).await?;
            let row = results.first().and_then(|r| r.first()).ok_or_else(|| Fail::Db {
                statement: DATABASE_OPTIONS.name,
                source: Box::new(tiberius::error::Error::Protocol("database_options returned no row".into())),
                connecting: false,
            })?;
            let r = cols(row, DATABASE_OPTIONS);
            Ok((r.int(0)?, r.int(1)? == 1))
        })?;
        let location = store.ctx.location.clone();
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { location, found: version, supported: SCHEMA_VERSION });
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::NotReady { location, what: upgrade_advice(version) });
        }
        if !snapshot {
            return Err(StoreError::NotReady {
                location,
                what: "READ_COMMITTED_SNAPSHOT is off, so every read would wait for an open ingest: run \
                       sql/schema/001_core.sql again while nothing else is connected (it turns it on)"
                    .into(),
            });
        }
        Ok(store)
    }
}

/// The model named `name` (and `version`), in any status; with no version, the only one.
async fn find_model(c: &mut Client, ctx: &Ctx, name: &str, version: Option<&str>) -> Result<Option<ModelRow>, Fail> {
    let rows = call(FIND_MODELS).bind(name.to_string()).bind(version.map(str::to_string)).rows(c).await?;
    let mut models = rows.iter().map(|r| model_row(r, FIND_MODELS)).collect::<Result<Vec<_>, _>>()?;
    if models.len() > 1 {
        return Err(Fail::Store(StoreError::AmbiguousModel {
            location: ctx.location.clone(),
            name: name.to_string(),
            versions: models.into_iter().map(|m| m.version).collect(),
        }));
    }
    Ok(models.pop())
}

async fn model_by_id(c: &mut Client, ctx: &Ctx, id: ModelId) -> Result<ModelRow, Fail> {
    let rows = call(MODEL_BY_ID).bind(id.0).rows(c).await?;
    match rows.first() {
        Some(row) => model_row(row, MODEL_BY_ID),
        None => Err(ctx.invalid(format!("model {} vanished", id.0))),
    }
}

/// A model's layers with their atom lists: two statements, whatever the layer count.
async fn read_layers(c: &mut Client, model: ModelId) -> Result<Vec<LayerRow>, Fail> {
    let mut layers = Vec::new();
    for row in call(LIST_LAYERS).bind(model.0).rows(c).await? {
        let r = cols(&row, LIST_LAYERS);
        let shape = r.str(4)?;
        layers.push(LayerRow {
            id: LayerId(r.int(0)?),
            model,
            ordinal: u32::try_from(r.int(1)?).map_err(|_| r.bad(1, "ordinal out of range"))?,
            tensor_name: r.string(2)?,
            dtype: r.string(3)?,
            shape: serde_json::from_str(shape)
                .map_err(|e| r.bad(4, &format!("Shape {shape:?} is not a JSON array of dimensions: {e}")))?,
            parameter_count: r.uint(5)?,
            byte_length: r.uint(6)?,
            tensor_root: r.hash(7)?,
            has_geometry: r.int(8)? != 0,
            atoms: Vec::new(),
        });
    }
    let index: HashMap<LayerId, usize> = layers.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    for row in call(LIST_MODEL_ATOMS).bind(model.0).rows(c).await? {
        let r = cols(&row, LIST_MODEL_ATOMS);
        let layer = LayerId(r.int(0)?);
        let i = *index.get(&layer).ok_or_else(|| r.bad(0, "a layer list_layers did not return"))?;
        layers[i].atoms.push(LayerAtom {
            ordinal: r.uint(2)?,
            atom: r.hash(3)?,
            byte_length: r.uint(4)?,
            coefficient: r.float(5)?,
        });
    }
    Ok(layers)
}

/// Removes a model's rows inside the caller's transaction.
async fn remove_model_rows(c: &mut Client, model: &ModelRow) -> Result<RemoveOutcome, Fail> {
    let row = call(RELEASE_MODEL_LAYERS).bind(model.id.0).row(c).await?;
    let r = cols(&row, RELEASE_MODEL_LAYERS);
    let (layers, released, freed, bytes) = (r.uint(0)?, r.uint(1)?, r.uint(2)?, r.uint(3)?);
    call(DELETE_MODEL_ROW).bind(model.id.0).rows(c).await?;
    Ok(RemoveOutcome { model: model.label(), layers, atoms_freed: freed, bytes_freed: bytes, atoms_kept: released - freed })
}

async fn commit(c: &mut Client) -> Result<(), Fail> {
    simple(c, COMMIT_TRANSACTION).await.map(drop)
}

async fn verify_on(c: &mut Client, scope: Option<ModelId>) -> Result<VerifyReport, Fail> {
    let mut report = VerifyReport::default();
    let models = match scope {
        Some(id) => call(MODEL_BY_ID).bind(id.0).rows(c).await?.iter().map(|r| model_row(r, MODEL_BY_ID)).collect(),
        None => call(LIST_MODELS).rows(c).await?.iter().map(|r| model_row(r, LIST_MODELS)).collect::<Result<Vec<_>, _>>(),
    }?;
    for model in &models {
        let label = model.label();
        let layers = read_layers(c, model.id).await?;
        report.models += 1;
        report.layers += layers.len() as u64;
        for layer in &layers {
            report.damage.extend(check_layer(&label, layer));
        }
        report.damage.extend(check_model(model, &layers));
        for row in call(LIST_MODEL_GEOMETRIES).bind(model.id.0).rows(c).await? {
            let r = cols(&row, LIST_MODEL_GEOMETRIES);
            report.damage.extend(check_geometry(&label, r.str(0)?, r.uint(1)?, r.bytes(2)?));
        }
    }

    // One streaming statement: payloads are hashed as they arrive, never all held at once. Uses
    // of a damaged atom are looked up after the stream, as the connection is busy until then.
    let (query, name) = call(VERIFY_TENSOR_ATOMS).bind(scope.map(|m| m.0)).checked();
    let mut rows = query.query(c).await.map_err(db(name))?.into_row_stream();
    let mut needs_uses: Vec<(i64, usize)> = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(db(name))? {
        let r = cols(&row, VERIFY_TENSOR_ATOMS);
        let check = AtomCheck {
            hash: r.hash(0)?,
            encoding: r.str(1)?,
            recorded_len: r.int(2)?,
            recorded_count: r.int(3)?,
            uses: r.uint(4)?,
            payload: r.bytes(6)?,
        };
        report.atoms += 1;
        report.atom_bytes += check.payload.len() as u64;
        for mut damage in check_atom(&check) {
            if damage.used_by_mut().is_some() {
                needs_uses.push((r.int(5)?, report.damage.len()));
            }
            report.damage.push(damage);
        }
    }
    drop(rows);
    let mut uses_of: HashMap<i64, Vec<AtomUse>> = HashMap::new();
    for (atom, at) in needs_uses {
        if let Entry::Vacant(slot) = uses_of.entry(atom) {
            let mut uses = Vec::new();
            for row in call(ATOM_USES).bind(atom).rows(c).await? {
                let r = cols(&row, ATOM_USES);
                uses.push(AtomUse { model: r.string(0)?, tensor: r.string(1)?, ordinal: r.uint(2)? });
            }
            slot.insert(uses);
        }
        if let Some(list) = report.damage[at].used_by_mut() {
            list.clone_from(&uses_of[&atom]);
        }
    }
    // Foreign keys: SQL Server enforces them (the schema creates them trusted), so there is no
    // equivalent of SQLite's foreign_key_check to run.
    Ok(report)
}

fn run_status(r: &Cols<'_>, i: usize) -> Result<RunStatus, Fail> {
    let text = r.str(i)?;
    RunStatus::parse(text).ok_or_else(|| r.bad(i, &format!("unknown status {text:?}")))
}

impl MssqlStore {
    /// [`Store::begin_model`] and [`Store::begin_derived_model`]: the writer's connection and
    /// transaction, and the model's row (with its lineage, if any) inside it.
    async fn begin(&self, model: &NewModel, lineage: Option<&ModelLineage>) -> Result<BeginModel> {
        let mut tries = 0u32;
        loop {
            match begin_on(&self.ctx, model, lineage).await {
                Ok(begun) => return Ok(begun),
                Err(fail) => {
                    // Nothing of a failed begin was committed, and its connection is gone:
                    // any transient failure may simply run again.
                    tries += 1;
                    if tries < ATTEMPTS && Ctx::retryable(&fail, true) {
                        tokio::time::sleep(backoff(tries)).await;
                        continue;
                    }
                    return Err(self.ctx.error(fail));
                }
            }
        }
    }
}

#[async_trait]
impl Store for MssqlStore {
    fn location(&self) -> &str {
        &self.ctx.location
    }

    async fn begin_model(&self, model: &NewModel) -> Result<BeginModel> {
        self.begin(model, None).await
    }

    async fn list_models(&self) -> Result<Vec<ModelRow>> {
        attempt!(self, idempotent: true, |c| {
            call(LIST_MODELS).rows(c).await?.iter().map(|r| model_row(r, LIST_MODELS)).collect()
        })
    }

    async fn model(&self, name: &str, version: Option<&str>) -> Result<Option<ModelRow>> {
        attempt!(self, idempotent: true, |c| {
            Ok(find_model(c, &self.ctx, name, version).await?.filter(|m| m.status == ModelStatus::Ready))
        })
    }

    async fn layers(&self, model: ModelId) -> Result<Vec<LayerRow>> {
        attempt!(self, idempotent: true, |c| { read_layers(c, model).await })
    }

    async fn fetch_atoms(&self, atoms: &[Hash256]) -> Result<Vec<FetchedAtom>> {
        let mut seen = HashSet::new();
        let wanted: Vec<Hash256> = atoms.iter().copied().filter(|h| seen.insert(*h)).collect();
        let mut found: HashMap<Hash256, (String, Vec<u8>)> = HashMap::with_capacity(wanted.len());
        for batch in wanted.chunks(FETCH_BATCH_ATOMS) {
            let rows = attempt!(self, idempotent: true, |c| {
                call(FETCH_TENSOR_ATOMS).bind(hashes_json(batch)).rows(c).await
            })?;
            for row in rows {
                let fetched: Result<_, Fail> = (|| {
                    let r = cols(&row, FETCH_TENSOR_ATOMS);
                    Ok((r.hash(1)?, r.string(2)?, r.bytes(4)?.to_vec()))
                })();
                let (hash, encoding, payload) = fetched.map_err(|f| self.ctx.error(f))?;
                found.insert(hash, (encoding, payload));
            }
        }
        let missing: Vec<&Hash256> = wanted.iter().filter(|h| !found.contains_key(h)).collect();
        if let Some(first) = missing.first() {
            return Err(StoreError::MissingAtoms { location: self.ctx.location.clone(), count: missing.len(), first: **first });
        }
        Ok(wanted
            .into_iter()
            .map(|hash| {
                let (encoding, payload) = found.remove(&hash).expect("checked above");
                FetchedAtom { hash, encoding, payload }
            })
            .collect())
    }

    async fn reference_counts(&self, atoms: &[Hash256]) -> Result<Vec<Option<u64>>> {
        let mut counts = HashMap::new();
        for batch in atoms.chunks(FETCH_BATCH_ATOMS) {
            let found = attempt!(self, idempotent: true, |c| {
                let mut found = Vec::new();
                for row in call(FIND_TENSOR_ATOMS).bind(hashes_json(batch)).rows(c).await? {
                    let r = cols(&row, FIND_TENSOR_ATOMS);
                    found.push((r.hash(1)?, r.uint(3)?));
                }
                Ok(found)
            })?;
            counts.extend(found);
        }
        Ok(atoms.iter().map(|h| counts.get(h).copied()).collect())
    }

    async fn model_material(&self, model: ModelId) -> Result<Option<ModelMaterial>> {
        attempt!(self, idempotent: true, |c| {
            let rows = call(READ_MODEL_MATERIAL).bind(model.0).rows(c).await?;
            match rows.first() {
                Some(row) => {
                    let r = cols(row, READ_MODEL_MATERIAL);
                    Ok(Some(ModelMaterial {
                        config_json: r.str(1)?.to_string(),
                        tokenizer_kind: r.str(2)?.to_string(),
                        tokenizer_material: r.opt_str(3)?.map(str::to_string),
                    }))
                }
                None => Ok(None),
            }
        })
    }

    async fn layer_geometry(&self, layer: LayerId) -> Result<Option<Vec<u8>>> {
        let wkb = attempt!(self, idempotent: true, |c| {
            let rows = call(READ_LAYER_GEOMETRY).bind(layer.0).rows(c).await?;
            match rows.first() {
                Some(row) => Ok(cols(row, READ_LAYER_GEOMETRY).opt_bytes(1)?.map(<[u8]>::to_vec)),
                None => Ok(None),
            }
        })?;
        // AsBinaryZM writes ISO WKB; re-encode it the loader's way so the bytes equal what was
        // put (same values, same byte order and header).
        wkb.map(|wkb| {
            hartonomous_loader::geometry::decode_linestring_zm(&wkb)
                .and_then(|points| hartonomous_loader::geometry::encode_linestring_zm(&points))
                .map_err(|e| StoreError::Damaged {
                    location: self.ctx.location.clone(),
                    what: format!("layer {}: its geometry is not a LINESTRING ZM: {e}", layer.0),
                })
        })
        .transpose()
    }

    async fn remove_model(&self, name: &str, version: Option<&str>) -> Result<RemoveOutcome> {
        // Not idempotent: after a lost acknowledgement a second run would report the model
        // missing. Deadlocks (rolled back by the server) still run again.
        attempt!(self, idempotent: false, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            let model = find_model(c, &self.ctx, name, version).await?.ok_or_else(|| StoreError::ModelNotFound {
                location: self.ctx.location.clone(),
                name: name.to_string(),
                version: version.map(str::to_string),
            })?;
            let outcome = remove_model_rows(c, &model).await?;
            commit(c).await?;
            Ok(outcome)
        })
    }

    async fn begin_derived_model(&self, model: &NewModel, lineage: &ModelLineage) -> Result<BeginModel> {
        self.begin(model, Some(lineage)).await
    }

    async fn verify(&self, model: Option<ModelId>) -> Result<VerifyReport> {
        attempt!(self, idempotent: true, |c| { verify_on(c, model).await })
    }

    async fn put_content_atoms(&self, atoms: &[ContentAtom]) -> Result<Vec<ContentAtomId>> {
        // Each put adds a reference, so a run whose acknowledgement was lost is not repeated.
        attempt!(self, idempotent: false, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            let mut ids = Vec::with_capacity(atoms.len());
            for atom in atoms {
                let row = call(UPSERT_CONTENT_ATOM)
                    .bind(atom.hash().0.to_vec())
                    .bind(atom.modality.clone())
                    .bind(atom.subtype.clone())
                    .bind(atom.canonical_text.clone())
                    .bind(atom.payload.clone())
                    .row(c)
                    .await?;
                ids.push(ContentAtomId(cols(&row, UPSERT_CONTENT_ATOM).int(0)?));
            }
            commit(c).await?;
            Ok(ids)
        })
    }

    async fn put_embeddings(&self, model: ModelId, embeddings: &[Embedding]) -> Result<()> {
        let mut rows = Vec::with_capacity(embeddings.len());
        for e in embeddings {
            let json = vector_json(&e.vector).map_err(|why| StoreError::InvalidRecord {
                location: self.ctx.location.clone(),
                what: format!("embedding of atom {}: {why}", e.atom.0),
            })?;
            // The coarse key's first two coordinates (SQLite keeps all three as a POINT Z).
            let [x, y, _] = crate::search::coarse_key(&e.vector);
            rows.push((e.atom.0, e.vector.len() as i64, json, x, y));
        }
        // Replacing is idempotent: a second run writes the same values.
        attempt!(self, idempotent: true, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            for (atom, dimension, json, x, y) in &rows {
                call(UPSERT_EMBEDDING)
                    .bind(*atom)
                    .bind(model.0)
                    .bind(*dimension)
                    .bind(json.clone())
                    .bind(Some(*x))
                    .bind(Some(*y))
                    .rows(c)
                    .await?;
            }
            commit(c).await?;
            Ok(())
        })
    }

    async fn nearest_embeddings(&self, model: ModelId, query: &[f32], k: usize) -> Result<Vec<Neighbor>> {
        let json = vector_json(query).map_err(|why| StoreError::InvalidRecord {
            location: self.ctx.location.clone(),
            what: format!("the query vector: {why}"),
        })?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let k = i64::try_from(k).unwrap_or(i64::MAX);
        let dimension = query.len().min(MAX_EMBEDDING_DIMENSION) as i64;
        attempt!(self, idempotent: true, |c| {
            let mut near = Vec::new();
            for row in call(NEAREST_EMBEDDINGS_COSINE).bind(model.0).bind(json.clone()).bind(k).bind(dimension).rows(c).await? {
                let r = cols(&row, NEAREST_EMBEDDINGS_COSINE);
                near.push(Neighbor {
                    atom: ContentAtomId(r.int(0)?),
                    atom_hash: r.hash(1)?,
                    cosine: (1.0 - r.float(2)?) as f32,
                });
            }
            Ok(near)
        })
    }

    async fn embedding_watermark(&self, model: ModelId) -> Result<EmbeddingWatermark> {
        attempt!(self, idempotent: true, |c| {
            let row = call(EMBEDDING_WATERMARK).bind(model.0).row(c).await?;
            let r = cols(&row, EMBEDDING_WATERMARK);
            Ok(EmbeddingWatermark { count: r.uint(0)?, max_id: r.int(1)? })
        })
    }

    async fn embeddings_after(&self, model: ModelId, after: i64, limit: usize) -> Result<Vec<StoredEmbedding>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        attempt!(self, idempotent: true, |c| {
            let mut out = Vec::new();
            for row in call(EMBEDDINGS_AFTER).bind(model.0).bind(after).bind(limit).rows(c).await? {
                let r = cols(&row, EMBEDDINGS_AFTER);
                let dimension = r.uint(3)? as usize;
                out.push(StoredEmbedding {
                    id: r.int(0)?,
                    atom: ContentAtomId(r.int(1)?),
                    modality: r.string(2)?,
                    vector: padded_vector(r.str(4)?, dimension).map_err(|why| r.bad(4, &why))?,
                });
            }
            Ok(out)
        })
    }

    async fn embeddings_of_atoms(&self, model: ModelId, atoms: &[ContentAtomId]) -> Result<Vec<Option<Vec<f32>>>> {
        let ids = serde_json::to_string(&atoms.iter().map(|a| a.0).collect::<Vec<_>>()).expect("integers serialise");
        attempt!(self, idempotent: true, |c| {
            let mut out = vec![None; atoms.len()];
            for row in call(EMBEDDINGS_OF_ATOMS).bind(model.0).bind(ids.clone()).rows(c).await? {
                let r = cols(&row, EMBEDDINGS_OF_ATOMS);
                let ordinal = r.uint(0)? as usize;
                let vector = padded_vector(r.str(2)?, r.uint(1)? as usize).map_err(|why| r.bad(2, &why))?;
                if let Some(slot) = out.get_mut(ordinal) {
                    *slot = Some(vector);
                }
            }
            Ok(out)
        })
    }

    async fn content_atoms(&self, atoms: &[ContentAtomId]) -> Result<Vec<Option<ContentAtomRow>>> {
        let ids = serde_json::to_string(&atoms.iter().map(|a| a.0).collect::<Vec<_>>()).expect("integers serialise");
        attempt!(self, idempotent: true, |c| {
            let mut out = vec![None; atoms.len()];
            for row in call(CONTENT_ATOMS).bind(ids.clone()).rows(c).await? {
                let r = cols(&row, CONTENT_ATOMS);
                let ordinal = r.uint(0)? as usize;
                let atom = ContentAtomRow {
                    id: ContentAtomId(r.int(1)?),
                    hash: r.hash(2)?,
                    modality: r.string(3)?,
                    subtype: r.opt_str(4)?.map(str::to_string),
                    text: r.opt_str(5)?.map(str::to_string),
                    payload_bytes: r.opt_int(6)?.map(|n| n.max(0) as u64),
                };
                if let Some(slot) = out.get_mut(ordinal) {
                    *slot = Some(atom);
                }
            }
            Ok(out)
        })
    }

    async fn record_request(&self, request: &NewRequest) -> Result<RequestId> {
        let models = serde_json::to_string(&request.model_names).expect("strings serialise");
        // Keyed by RequestKey: a second run returns the first row.
        attempt!(self, idempotent: true, |c| {
            let row = call(INSERT_REQUEST)
                .bind(request.request_key.clone())
                .bind(request.tenant.clone())
                .bind(request.operation.clone())
                .bind(models.clone())
                .bind(RunStatus::Running.as_str())
                .row(c)
                .await?;
            Ok(RequestId(cols(&row, INSERT_REQUEST).int(0)?))
        })
    }

    async fn find_request(&self, request_key: &str) -> Result<Option<RequestId>> {
        attempt!(self, idempotent: true, |c| {
            let rows = call(FIND_REQUEST).bind(request_key.to_string()).rows(c).await?;
            match rows.first() {
                Some(row) => Ok(Some(RequestId(cols(row, FIND_REQUEST).int(0)?))),
                None => Ok(None),
            }
        })
    }

    async fn complete_request(&self, request: RequestId, completion: &RequestCompletion) -> Result<()> {
        let found = attempt!(self, idempotent: true, |c| {
            let row = call(COMPLETE_REQUEST)
                .bind(request.0)
                .bind(completion.status.as_str())
                .bind(completion.duration_ms)
                .bind(completion.error_message.clone())
                .row(c)
                .await?;
            Ok(cols(&row, COMPLETE_REQUEST).int(1)? == 1)
        })?;
        if !found {
            return Err(StoreError::InvalidRecord { location: self.ctx.location.clone(), what: format!("no inference request {}", request.0) });
        }
        Ok(())
    }

    async fn record_step(&self, step: &StepRecord) -> Result<()> {
        // Keyed by (request, ordinal).
        attempt!(self, idempotent: true, |c| {
            call(INSERT_STEP)
                .bind(step.request.0)
                .bind(i64::from(step.ordinal))
                .bind(step.operation.clone())
                .bind(step.model.map(|m| m.0))
                .bind(step.weights_root.map(|h| h.0.to_vec()))
                .bind(step.parameters_json.clone())
                .bind(step.status.as_str())
                .bind(step.duration_ms)
                .bind(step.tenant.clone())
                .rows(c)
                .await?;
            Ok(())
        })
    }

    async fn record_usage(&self, usage: &UsageRecord) -> Result<()> {
        // Keyed by UsageKey, or without one by (request, operation, model) when there is a
        // request; a row with neither would be counted twice by a second run.
        attempt!(self, idempotent: usage.usage_key.is_some() || usage.request.is_some(), |c| {
            call(INSERT_USAGE)
                .bind(usage.tenant.clone())
                .bind(usage.request.map(|r| r.0))
                .bind(usage.operation.clone())
                .bind(usage.model.map(|m| m.0))
                .bind(db_int(usage.input_tokens))
                .bind(db_int(usage.output_tokens))
                .bind(usage.compute_ms)
                .bind(usage.usage_key.clone())
                .bind(usage.model_name.clone())
                .bind(db_int(usage.vectors))
                .bind(usage.billing_units)
                .bind(i32::from(usage.status_code))
                .rows(c)
                .await?;
            Ok(())
        })
    }

    async fn add_lineage_edge(&self, edge: &LineageEdge) -> Result<()> {
        // Nodes and the edge are upserts: idempotent.
        attempt!(self, idempotent: true, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            for node in [edge.from, edge.to] {
                call(UPSERT_GRAPH_NODE).bind(node.kind()).bind(node.ref_id()).exec(c).await?;
            }
            call(INSERT_GRAPH_EDGE)
                .bind(edge.from.kind())
                .bind(edge.from.ref_id())
                .bind(edge.to.kind())
                .bind(edge.to.ref_id())
                .bind(edge.relation.clone())
                .bind(edge.weight)
                .bind(edge.request.map(|r| r.0))
                .rows(c)
                .await?;
            commit(c).await?;
            Ok(())
        })
    }

    async fn lineage(&self, request: RequestId) -> Result<Option<Lineage>> {
        attempt!(self, idempotent: true, |c| {
            let rows = call(READ_REQUEST).bind(request.0).rows(c).await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let r = cols(row, READ_REQUEST);
            let req = NewRequest {
                request_key: r.string(0)?,
                tenant: r.string(1)?,
                operation: r.string(2)?,
                model_names: serde_json::from_str(r.str(3)?).unwrap_or_default(),
            };
            let (status, duration_ms, error_message) = (run_status(&r, 4)?, r.opt_float(5)?, r.opt_str(6)?.map(str::to_string));
            let mut steps = Vec::new();
            for row in call(STEPS_OF_REQUEST).bind(request.0).rows(c).await? {
                let r = cols(&row, STEPS_OF_REQUEST);
                steps.push(StepRecord {
                    request,
                    ordinal: u32::try_from(r.int(0)?).map_err(|_| r.bad(0, "ordinal out of range"))?,
                    operation: r.string(1)?,
                    model: r.opt_int(2)?.map(ModelId),
                    weights_root: r.opt_hash(3)?,
                    parameters_json: r.opt_str(4)?.unwrap_or_default().to_string(),
                    status: run_status(&r, 5)?,
                    duration_ms: r.opt_float(6)?,
                    tenant: r.string(7)?,
                });
            }
            let mut edges = Vec::new();
            for row in call(EDGES_OF_REQUEST).bind(request.0).rows(c).await? {
                let r = cols(&row, EDGES_OF_REQUEST);
                let node = |kind: usize| -> Result<GraphNode, Fail> {
                    let k = r.str(kind)?;
                    GraphNode::new(k, r.int(kind + 1)?).ok_or_else(|| r.bad(kind, &format!("unknown node kind {k:?}")))
                };
                edges.push(LineageEdge { from: node(0)?, to: node(2)?, relation: r.string(4)?, weight: r.float(5)?, request: Some(request) });
            }
            let mut usage = Vec::new();
            for row in call(USAGE_OF_REQUEST).bind(request.0).rows(c).await? {
                let r = cols(&row, USAGE_OF_REQUEST);
                // As the SQLite store: the lineage shows what was used, not the ledger's retry key.
                usage.push(UsageRecord {
                    usage_key: None,
                    tenant: r.string(0)?,
                    request: Some(request),
                    operation: r.string(1)?,
                    model: r.opt_int(2)?.map(ModelId),
                    model_name: r.string(6)?,
                    input_tokens: r.uint(3)?,
                    output_tokens: r.uint(4)?,
                    vectors: r.uint(7)?,
                    compute_ms: r.float(5)?,
                    billing_units: r.float(8)?,
                    status_code: r.status(9)?,
                });
            }
            Ok(Some(Lineage { request: req, status, duration_ms, error_message, steps, edges, usage }))
        })
    }

    async fn governance(&self) -> Result<GovernanceRows> {
        // One transaction, so that the four locking reads of list_governance see one state.
        attempt!(self, idempotent: true, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            let sets = call(LIST_GOVERNANCE).result_sets(c).await?;
            commit(c).await?;
            governance_rows(&sets)
        })
    }

    async fn put_tenant(&self, tenant: &TenantSettings) -> Result<()> {
        // Sets the same values again when repeated.
        attempt!(self, idempotent: true, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            call(UPSERT_TENANT)
                .bind(tenant.name.clone())
                .bind(tenant.plan.clone())
                .bind(tenant.requests_per_minute.map(db_int))
                .bind(tenant.tokens_per_minute.map(db_int))
                .exec(c)
                .await?;
            commit(c).await
        })
    }

    async fn add_api_key(&self, key: &NewApiKey) -> Result<()> {
        // Not idempotent: after a lost acknowledgement a second run would find its own key and
        // report it taken. Deadlocks (rolled back by the server) still run again.
        let taken = attempt!(self, idempotent: false, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            let row = call(INSERT_API_KEY)
                .bind(key.key_id.clone())
                .bind(key.tenant.clone())
                .bind(key.label.clone())
                .bind(key.key_hash.0.to_vec())
                .row(c)
                .await?;
            let taken = cols(&row, INSERT_API_KEY).int(0)? == 1;
            commit(c).await?;
            Ok(taken)
        })?;
        if taken {
            return Err(StoreError::InvalidRecord {
                location: self.ctx.location.clone(),
                what: format!("an API key with id {} (or the same secret) already exists", key.key_id),
            });
        }
        Ok(())
    }

    async fn revoke_api_key(&self, key_id: &str) -> Result<bool> {
        // Not idempotent: a second run after a lost acknowledgement would answer false.
        attempt!(self, idempotent: false, |c| {
            let row = call(REVOKE_API_KEY).bind(key_id.to_string()).row(c).await?;
            Ok(cols(&row, REVOKE_API_KEY).int(0)? > 0)
        })
    }

    async fn add_access_rule(&self, rule: &NewAccessRule) -> Result<i64> {
        // Not idempotent: a second run would append the rule again.
        attempt!(self, idempotent: false, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            let row = call(INSERT_ACCESS_RULE)
                .bind(rule.tenant.clone())
                .bind(rule.effect.as_str())
                .bind(rule.operation.clone())
                .bind(rule.model_pattern.clone())
                .row(c)
                .await?;
            let id = cols(&row, INSERT_ACCESS_RULE).int(0)?;
            commit(c).await?;
            Ok(id)
        })
    }

    async fn remove_access_rule(&self, rule_id: i64) -> Result<bool> {
        // Not idempotent: a second run after a lost acknowledgement would answer false.
        attempt!(self, idempotent: false, |c| {
            let row = call(DELETE_ACCESS_RULE).bind(rule_id).row(c).await?;
            Ok(cols(&row, DELETE_ACCESS_RULE).int(0)? > 0)
        })
    }

    async fn put_rate(&self, rate: &OperationRate) -> Result<()> {
        // Sets the same values again when repeated.
        attempt!(self, idempotent: true, |c| {
            simple(c, BEGIN_TRANSACTION).await?;
            call(UPSERT_OPERATION_RATE)
                .bind(rate.plan.clone())
                .bind(rate.operation.clone())
                .bind(rate.per_request)
                .bind(rate.per_1k_input_tokens)
                .bind(rate.per_1k_output_tokens)
                .bind(rate.per_vector)
                .exec(c)
                .await?;
            commit(c).await
        })
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        attempt!(self, idempotent: true, |c| {
            let rows = call(LIST_USAGE).bind(query.tenant.clone()).bind(query.since.clone()).bind(limit).rows(c).await?;
            rows.iter()
                .map(|row| {
                    let r = cols(row, LIST_USAGE);
                    Ok(UsageRow {
                        usage_id: r.int(0)?,
                        tenant: r.string(1)?,
                        request_id: r.opt_str(2)?.map(str::to_string),
                        operation: r.string(3)?,
                        model: r.string(4)?,
                        input_tokens: r.uint(5)?,
                        output_tokens: r.uint(6)?,
                        vectors: r.uint(7)?,
                        duration_ms: r.float(8)?,
                        billing_units: r.float(9)?,
                        status: r.status(10)?,
                        recorded_at: r.string(11)?,
                    })
                })
                .collect()
        })
    }
}

/// The four result sets of `list_governance`: tenants, keys, rules, rates.
fn governance_rows(sets: &[Vec<Row>]) -> Result<GovernanceRows, Fail> {
    let [tenants, keys, rules, rates] = sets else {
        return Err(Fail::Db {
            statement: LIST_GOVERNANCE.name,
            source: Box::new(tiberius::error::Error::Protocol(
                format!("{} result sets where list_governance returns 4", sets.len()).into(),
            )),
            connecting: false,
        });
    };
    let st = LIST_GOVERNANCE;
    Ok(GovernanceRows {
        tenants: tenants
            .iter()
            .map(|row| {
                let r = cols(row, st);
                Ok(TenantSettings {
                    name: r.string(0)?,
                    plan: r.string(1)?,
                    requests_per_minute: r.opt_uint(2)?,
                    tokens_per_minute: r.opt_uint(3)?,
                })
            })
            .collect::<Result<_, Fail>>()?,
        keys: keys
            .iter()
            .map(|row| {
                let r = cols(row, st);
                Ok(ApiKeyRow {
                    key_id: r.string(0)?,
                    tenant: r.string(1)?,
                    label: r.string(2)?,
                    key_hash: r.hash(3)?,
                    created_at: r.string(4)?,
                    revoked_at: r.opt_str(5)?.map(str::to_string),
                })
            })
            .collect::<Result<_, Fail>>()?,
        rules: rules
            .iter()
            .map(|row| {
                let r = cols(row, st);
                let effect = r.str(3)?;
                Ok(AccessRule {
                    rule_id: r.int(0)?,
                    tenant: r.string(1)?,
                    position: r.int(2)?,
                    effect: RuleEffect::parse(effect).ok_or_else(|| r.bad(3, &format!("unknown rule effect {effect:?}")))?,
                    operation: r.string(4)?,
                    model_pattern: r.string(5)?,
                })
            })
            .collect::<Result<_, Fail>>()?,
        rates: rates
            .iter()
            .map(|row| {
                let r = cols(row, st);
                Ok(OperationRate {
                    plan: r.string(0)?,
                    operation: r.string(1)?,
                    per_request: r.float(2)?,
                    per_1k_input_tokens: r.float(3)?,
                    per_1k_output_tokens: r.float(4)?,
                    per_vector: r.float(5)?,
                })
            })
            .collect::<Result<_, Fail>>()?,
    })
}

/// A writer's connection, inside its open transaction, and what it has learnt.
struct WriterState {
    client: Client,
    model: ModelId,
    tensor_count: u64,
    /// Atoms this writer has put (stored now, by it or before it), so repeats are not re-sent.
    put: HashSet<Hash256>,
    /// (tensor name, tensor root) of every layer put, for the weights root at commit.
    layers: Vec<(String, Hash256)>,
}

/// Opens the writer's connection and transaction and starts the model.
async fn begin_on(ctx: &Arc<Ctx>, m: &NewModel, lineage: Option<&ModelLineage>) -> Result<BeginModel, Fail> {
    let mut client = connect(ctx).await?;
    let c = &mut client;
    simple(c, CREATE_TENSOR_ATOM_STAGE).await?;
    simple(c, BEGIN_TRANSACTION).await?;
    for _ in 0..2 {
        let row = call(BEGIN_MODEL)
            .bind(m.name.clone())
            .bind(m.version.clone())
            .bind(m.architecture.clone())
            .bind(m.format.clone())
            .bind(Some(m.config_json.clone()))
            .bind(m.tokenizer_kind.clone())
            .bind(m.tokenizer_material.clone())
            .bind(db_int(m.parameter_count))
            .bind(db_int(m.tensor_count))
            .bind(lineage.map(|l| l.parent.0))
            .bind(lineage.map(|l| l.derived_by.clone()))
            .row(c)
            .await?;
        let r = cols(&row, BEGIN_MODEL);
        let (id, status, created) = (ModelId(r.int(0)?), r.string(1)?, r.int(2)? == 1);
        if created {
            return Ok(BeginModel::Writer(Box::new(MssqlWriter {
                ctx: ctx.clone(),
                model: id,
                state: Some(WriterState { client, model: id, tensor_count: m.tensor_count, put: HashSet::new(), layers: Vec::new() }),
            })));
        }
        let existing = model_by_id(c, ctx, id).await?;
        if status == ModelStatus::Ready.as_str() {
            simple(c, ROLLBACK_TRANSACTION).await?;
            return Ok(BeginModel::Exists(Box::new(existing)));
        }
        // A row left 'ingesting' by something that committed it without its layers: clear it in
        // this transaction, then insert afresh.
        remove_model_rows(c, &existing).await?;
    }
    Err(ctx.invalid(format!("model {}:{} stays 'ingesting' after it was cleared", m.name, m.version)))
}

/// Writes one model inside one transaction on its own connection.
struct MssqlWriter {
    ctx: Arc<Ctx>,
    model: ModelId,
    /// `None` once a call failed: its transaction was rolled back and the connection closed.
    state: Option<WriterState>,
}

impl MssqlWriter {
    fn take_state(&mut self) -> Result<WriterState> {
        self.state.take().ok_or_else(|| StoreError::Task {
            location: self.ctx.location.clone(),
            what: "this model writer failed earlier and was discarded (everything it wrote was rolled back)".into(),
        })
    }

    /// Keeps the state after a call that worked; after a failure rolls the transaction back and
    /// closes the connection, which discards the writer. An ingest is not retried statement by
    /// statement: its transaction is gone, and running the ingest again is safe.
    async fn settle<T>(&mut self, mut state: WriterState, result: Result<T, Fail>) -> Result<T> {
        match result {
            Ok(v) => {
                self.state = Some(state);
                Ok(v)
            }
            Err(fail) => {
                let _ = simple(&mut state.client, ROLLBACK_TRANSACTION).await;
                drop(state);
                Err(self.ctx.error(fail))
            }
        }
    }
}

async fn put_atoms_on(s: &mut WriterState, atoms: Vec<AtomRecord>) -> Result<PutAtomsOutcome, Fail> {
    let mut outcome = PutAtomsOutcome::default();
    let mut fresh = Vec::with_capacity(atoms.len());
    for atom in atoms {
        if s.put.insert(atom.hash) {
            fresh.push(atom);
        } else {
            outcome.reused += 1;
        }
    }
    if fresh.is_empty() {
        return Ok(outcome);
    }
    // Atoms other models stored already: found by hash, their payloads never sent.
    let hashes: Vec<Hash256> = fresh.iter().map(|a| a.hash).collect();
    let mut stored = HashSet::new();
    for row in call(FIND_TENSOR_ATOMS).bind(hashes_json(&hashes)).rows(&mut s.client).await? {
        stored.insert(cols(&row, FIND_TENSOR_ATOMS).hash(1)?);
    }
    let new: Vec<AtomRecord> = fresh.into_iter().filter(|a| !stored.contains(&a.hash)).collect();
    outcome.reused += stored.len() as u64;
    if new.is_empty() {
        return Ok(outcome);
    }
    let sent = new.len() as u64;
    let mut bulk = s.client.bulk_insert("#TensorAtomStage").await.map_err(db("bulk load into #TensorAtomStage"))?;
    for atom in new {
        let length = i32::try_from(atom.payload.len()).map_err(|_| Fail::Db {
            statement: "bulk load into #TensorAtomStage",
            source: Box::new(tiberius::error::Error::BulkInput(format!("atom {} has {} bytes, over 2 GiB", atom.hash, atom.payload.len()).into())),
            connecting: false,
        })?;
        let mut row = TokenRow::new();
        row.push(ColumnData::Binary(Some(Cow::Owned(atom.hash.0.to_vec()))));
        row.push(ColumnData::String(Some(Cow::Borrowed(atom.encoding.tag()))));
        row.push(ColumnData::I32(Some(length)));
        row.push(ColumnData::Binary(Some(Cow::Owned(atom.payload))));
        row.push(ColumnData::String(signature_wkt(atom.signature).map(Cow::Owned)));
        bulk.send(row).await.map_err(db("bulk load into #TensorAtomStage"))?;
    }
    bulk.finalize().await.map_err(db("bulk load into #TensorAtomStage"))?;
    let results = simple(&mut s.client, APPLY_TENSOR_ATOM_STAGE).await?;
    let row = results.iter().flatten().next().ok_or_else(|| Fail::Db {
        statement: APPLY_TENSOR_ATOM_STAGE.name,
        source: Box::new(tiberius::error::Error::Protocol("apply_tensor_atom_stage returned no row".into())),
        connecting: false,
    })?;
    let r = cols(row, APPLY_TENSOR_ATOM_STAGE);
    let (new_atoms, new_bytes) = (r.uint(0)?, r.uint(1)?);
    outcome.new += new_atoms;
    outcome.bytes_written += new_bytes;
    // Stored meanwhile by a concurrent ingest: reused.
    outcome.reused += sent - new_atoms;
    Ok(outcome)
}

async fn put_layers_on(s: &mut WriterState, ctx: &Ctx, layers: Vec<LayerRecord>) -> Result<(), Fail> {
    for layer in layers {
        layer.check(&ctx.location)?;
        let name = &layer.tensor_name;
        if layer.dtype.bytes_for(layer.parameter_count()) != Some(layer.byte_length) {
            return Err(ctx.invalid(format!(
                "layer {name}: {} elements of {} do not take {} bytes",
                layer.parameter_count(),
                layer.dtype,
                layer.byte_length
            )));
        }
        let geometry = match &layer.geometry {
            Some(wkb) => Some(linestring_wkt(wkb).map_err(|why| ctx.invalid(format!("layer {name}: {why}")))?),
            None => None,
        };
        let row = call(INSERT_LAYER)
            .bind(s.model.0)
            .bind(i64::from(layer.ordinal))
            .bind(name.clone())
            .bind(layer.dtype.tag())
            .bind(serde_json::to_string(&layer.shape).expect("numbers serialise"))
            .bind(db_int(layer.parameter_count()))
            .bind(db_int(layer.byte_length))
            .bind(layer.tensor_root.0.to_vec())
            .bind(hashes_json(&layer.atoms))
            .row(&mut s.client)
            .await?;
        let r = cols(&row, INSERT_LAYER);
        let (layer_id, listed, found, bytes) = (r.int(0)?, r.uint(1)?, r.uint(2)?, r.uint(3)?);
        if found < listed {
            return Err(ctx.invalid(format!("layer {name}: {} of its {listed} atoms were never put", listed - found)));
        }
        if bytes != layer.byte_length {
            return Err(ctx.invalid(format!("layer {name}: its atoms hold {bytes} bytes, not its {} bytes", layer.byte_length)));
        }
        if let Some(wkt) = geometry {
            call(WRITE_LAYER_GEOMETRY_WKT).bind(layer_id).bind(wkt).exec(&mut s.client).await?;
        }
        s.layers.push((layer.tensor_name, layer.tensor_root));
    }
    Ok(())
}

async fn commit_on(s: &mut WriterState, ctx: &Ctx, seal: ModelSeal) -> Result<ModelRow, Fail> {
    if s.layers.len() as u64 != s.tensor_count {
        return Err(ctx.invalid(format!(
            "commit after {} of the model's {} layers; nothing was stored",
            s.layers.len(),
            s.tensor_count
        )));
    }
    let computed = weights_root(s.layers.iter().map(|(name, root)| (name.as_str(), *root)));
    if computed != seal.weights_root {
        return Err(ctx.invalid(format!("the layers give weights root {computed}, not {}; nothing was stored", seal.weights_root)));
    }
    let row = call(MARK_MODEL_READY)
        .bind(s.model.0)
        .bind(seal.weights_root.0.to_vec())
        .bind(seal.source_file_hash.0.to_vec())
        .row(&mut s.client)
        .await?;
    if cols(&row, MARK_MODEL_READY).int(0)? != 1 {
        return Err(ctx.invalid(format!("model {} was not 'ingesting' at its commit; nothing was stored", s.model.0)));
    }
    commit(&mut s.client).await?;
    model_by_id(&mut s.client, ctx, s.model).await
}

#[async_trait]
impl ModelWriter for MssqlWriter {
    fn model(&self) -> ModelId {
        self.model
    }

    async fn put_atoms(&mut self, atoms: Vec<AtomRecord>) -> Result<PutAtomsOutcome> {
        let mut state = self.take_state()?;
        let result = put_atoms_on(&mut state, atoms).await;
        self.settle(state, result).await
    }

    async fn put_layers(&mut self, layers: Vec<LayerRecord>) -> Result<()> {
        let mut state = self.take_state()?;
        let ctx = self.ctx.clone();
        let result = put_layers_on(&mut state, &ctx, layers).await;
        self.settle(state, result).await
    }

    async fn commit(mut self: Box<Self>, seal: ModelSeal) -> Result<ModelRow> {
        let mut state = self.take_state()?;
        let ctx = self.ctx.clone();
        let result = commit_on(&mut state, &ctx, seal).await;
        // After a failed commit statement the outcome may be unknown (the connection dropped
        // with the COMMIT in flight): the error names commit_transaction, and re-running the
        // ingest tells, since begin_model reports a model that was committed.
        self.settle(state, result).await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let mut state = self.take_state()?;
        let result = simple(&mut state.client, ROLLBACK_TRANSACTION).await.map(drop);
        drop(state);
        result.map_err(|f| self.ctx.error(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_schema_is_told_the_scripts_to_run() {
        let advice = upgrade_advice(3);
        assert!(advice.contains("version 3") && advice.contains("needs 4"), "{advice}");
        assert!(advice.contains("sql/schema/004_governance.sql") && !advice.contains("003_"), "{advice}");
        let advice = upgrade_advice(0);
        assert!(advice.contains("001_core.sql, then sql/schema/002_lineage.sql"), "{advice}");
        assert_eq!(SCHEMA_SCRIPTS.last().map(|s| s.0), Some(SCHEMA_VERSION), "a script for every version");
    }
}
