//! The embedded store: one SQLite file (rusqlite with SQLite compiled in, nothing to install).
//!
//! - **Schema**: `sqlite/schema.sql`, the same tables and columns as SQL Server's, created on
//!   first use and recorded in `SchemaVersion`; a file of a newer version is refused by name.
//! - **Statements**: all in `sqlite/statements.rs`, prepared once per connection and cached.
//! - **Connections**: WAL mode (readers never wait for the writer), `synchronous = FULL` (a
//!   model reported ingested survives a power cut), foreign keys on, a 30 s busy timeout.
//!   The store keeps one connection for reads and small writes behind a mutex; each
//!   [`ModelWriter`] opens its own, so `models` and `verify` keep working during an ingest.
//! - **Threads**: SQLite calls block, so every call runs on tokio's blocking pool; a
//!   connection is used by one thread at a time (`SQLITE_OPEN_NO_MUTEX`).
//! - **Crash safety**: a model writer is one transaction (`BEGIN IMMEDIATE` at
//!   [`Store::begin_model`], `COMMIT` at [`ModelWriter::commit`]). A process killed before the
//!   commit leaves only uncommitted WAL frames, which SQLite discards when the file is next
//!   opened: no model row, no atom, no changed reference count. SQLite spills a large
//!   transaction's pages to the WAL as it goes, so memory does not grow with the model; the WAL
//!   grows by the model's new bytes and is checkpointed into the database at commit.

mod statements;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use hartonomous_loader::atom::weights_root;
use hartonomous_loader::geometry::encode_point_z;
use hartonomous_loader::Hash256;
use rusqlite::types::Type;
use rusqlite::{params, CachedStatement, Connection, ErrorCode, OpenFlags, OptionalExtension, Params, Row};

use super::verify::{check_atom, check_geometry, check_layer, check_model, AtomCheck};
use super::{
    db_int,
    cosine, AtomRecord, ContentAtomRow, EmbeddingWatermark, StoredEmbedding, AtomUse, BeginModel, ContentAtom, ContentAtomId, Damage, Embedding, FetchedAtom, GraphNode,
    LayerAtom, LayerId, LayerRecord, LayerRow, Lineage, LineageEdge, ModelId, ModelLineage, ModelMaterial, ModelRow, ModelSeal, ModelStatus, ModelWriter,
    Neighbor, NewModel, NewRequest, PutAtomsOutcome, RemoveOutcome, RequestCompletion, RequestId, Result, RunStatus,
    StepRecord, Store, StoreError, UsageRecord, VerifyReport, FETCH_BATCH_ATOMS, MAX_EMBEDDING_DIMENSION,
    AccessRule, ApiKeyRow, GovernanceRows, NewAccessRule, NewApiKey, OperationRate, RuleEffect, TenantSettings, UsageQuery, UsageRow,
};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 3;
/// The version `schema.sql` creates; a new store then takes the migrations after it, so each
/// later change is written once.
const BASE_SCHEMA_VERSION: i64 = 2;
const SCHEMA: &str = include_str!("sqlite/schema.sql");
const SCHEMA_DESCRIPTION: &str =
    "models (with their lineage), layers, tensor atoms and coefficients, content atoms, embeddings, lineage, usage";

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of a new database. Atoms are 64 KiB blobs: with 16 KiB pages each is four
/// overflow pages instead of sixteen (https://www.sqlite.org/intern-v-extern-blob.html).
const PAGE_SIZE: u32 = 16 * 1024;
/// After a checkpoint the WAL file is truncated to this, so a large ingest's WAL does not stay
/// on disk.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Where the store is, shared by its connections for error messages.
struct Ctx {
    path: PathBuf,
    location: String,
}

impl Ctx {
    fn sqlite(&self, statement: &'static str, source: rusqlite::Error) -> StoreError {
        let hint = match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                " (another process is writing to this store, perhaps an ingest: retry when it has finished)"
            }
            Some(ErrorCode::CannotOpen) => " (does the folder exist, and may this user write to it?)",
            Some(ErrorCode::NotADatabase) => " (this file is not a SQLite database)",
            Some(ErrorCode::DiskFull) => " (the disk is full)",
            Some(ErrorCode::ReadOnly) => " (the file or its folder is read-only)",
            Some(ErrorCode::DatabaseCorrupt) => " (the file is damaged; restore it from a backup)",
            _ => "",
        };
        StoreError::Sqlite {
            path: self.location.clone(),
            statement,
            source,
            hint,
        }
    }

    fn invalid(&self, what: String) -> StoreError {
        StoreError::InvalidRecord {
            location: self.location.clone(),
            what,
        }
    }
}

/// A cached statement that knows its name, so every error says which statement failed.
struct Stmt<'c> {
    inner: CachedStatement<'c>,
    at: At<'c>,
}

/// A statement's name and store, for mapping errors inside row callbacks.
#[derive(Clone, Copy)]
struct At<'c> {
    ctx: &'c Ctx,
    name: &'static str,
}

impl At<'_> {
    fn err(self, e: rusqlite::Error) -> StoreError {
        self.ctx.sqlite(self.name, e)
    }
}

/// Prepares (or takes from the connection's cache) the statement named in `statements`.
macro_rules! st {
    ($conn:expr, $ctx:expr, $name:ident) => {
        Stmt::prepare($conn, $ctx, statements::$name, stringify!($name))
    };
}

impl<'c> Stmt<'c> {
    fn prepare(conn: &'c Connection, ctx: &'c Ctx, sql: &'static str, name: &'static str) -> Result<Self> {
        let at = At { ctx, name };
        let inner = conn.prepare_cached(sql).map_err(|e| at.err(e))?;
        Ok(Self { inner, at })
    }

    fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let at = self.at;
        self.inner.execute(params).map_err(|e| at.err(e))
    }

    fn row<T, P: Params>(&mut self, params: P, f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> Result<Option<T>> {
        let at = self.at;
        self.inner.query_row(params, f).optional().map_err(|e| at.err(e))
    }

    fn rows<T, P: Params>(&mut self, params: P, mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>> {
        let at = self.at;
        let mut out = Vec::new();
        self.each(params, |row| {
            out.push(f(row).map_err(|e| at.err(e))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams the rows to `f` without collecting them (verify reads every payload this way).
    fn each<P: Params>(&mut self, params: P, mut f: impl FnMut(&Row<'_>) -> Result<()>) -> Result<()> {
        let at = self.at;
        let mut rows = self.inner.query(params).map_err(|e| at.err(e))?;
        while let Some(row) = rows.next().map_err(|e| at.err(e))? {
            f(row)?;
        }
        Ok(())
    }
}

/// A little-endian f32 array column (`EmbeddingVector`).
fn f32_blob(row: &Row<'_>, i: usize) -> rusqlite::Result<Vec<f32>> {
    let bytes = row.get_ref(i)?.as_blob()?;
    if bytes.len() % 4 != 0 {
        return Err(rusqlite::Error::FromSqlConversionFailure(i, Type::Blob, format!("{} bytes is not an f32 array", bytes.len()).into()));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn hash_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Hash256> {
    let bytes = row.get_ref(i)?.as_blob()?;
    let hash: [u8; 32] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(i, Type::Blob, format!("{} bytes is not a SHA-256", bytes.len()).into())
    })?;
    Ok(Hash256(hash))
}

fn opt_hash_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Hash256>> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        _ => hash_col(row, i).map(Some),
    }
}

fn u64_col(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn opt_u64_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(v) => u64::try_from(v).map(Some).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v)),
    }
}


/// Reads a row of the columns `statements::model_columns!` lists.
fn model_row(row: &Row<'_>) -> rusqlite::Result<ModelRow> {
    let status: String = row.get(11)?;
    Ok(ModelRow {
        id: ModelId(row.get(0)?),
        name: row.get(1)?,
        version: row.get(2)?,
        architecture: row.get(3)?,
        format: row.get(4)?,
        tokenizer_kind: row.get(5)?,
        weights_root: opt_hash_col(row, 6)?,
        source_file_hash: opt_hash_col(row, 7)?,
        parameter_count: u64_col(row, 8)?,
        tensor_count: u64_col(row, 9)?,
        atom_bytes: u64_col(row, 10)?,
        status: ModelStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(11, Type::Text, format!("unknown model status {status:?}").into())
        })?,
        created_at: row.get(12)?,
        parent: row.get::<_, Option<i64>>(13)?.map(ModelId),
        derived_by: row.get(14)?,
    })
}

fn hashes_json(hashes: &[Hash256]) -> String {
    serde_json::to_string(&hashes.iter().map(Hash256::to_hex).collect::<Vec<_>>()).expect("strings serialise")
}

/// Runs blocking SQLite work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(ctx: &Ctx, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task {
        location: ctx.location.clone(),
        what: e.to_string(),
    })?
}

/// Opens and configures one connection.
fn connect(ctx: &Ctx, create: bool) -> Result<Connection> {
    if !create && !ctx.path.exists() {
        return Err(StoreError::NotFound {
            location: ctx.location.clone(),
        });
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(&ctx.path, flags).map_err(|e| ctx.sqlite("open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| ctx.sqlite("busy_timeout", e))?;
    // Takes effect only on a new, empty database (before WAL mode and the first table).
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(|e| ctx.sqlite("page_size", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| ctx.sqlite("journal_mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            url: ctx.location.clone(),
            reason: format!("SQLite would not switch the file to WAL mode (it stays in {mode} mode); put the store on a local file system"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| ctx.sqlite("synchronous", e))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| ctx.sqlite("foreign_keys", e))?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(|e| ctx.sqlite("journal_size_limit", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Upgrades from an earlier version, in order: the version reached, the name of the statements
/// that reach it from the one before (for errors), its description, and the statements.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (2, "MIGRATE_TO_2", "models' lineage: ParentModelId and DerivedBy", statements::MIGRATE_TO_2),
    (3, "MIGRATE_TO_3", "governance: tenants, API keys, access rules, rate plans; a ledger row per request", statements::MIGRATE_TO_3),
];

/// Creates the schema on first use, upgrades a file of an earlier version (each migration and
/// its version row in the one transaction), and refuses a file written by a newer build. Reads
/// first, so opening an up-to-date store never waits for a writer.
fn migrate(conn: &mut Connection, ctx: &Ctx) -> Result<()> {
    let version = |conn: &Connection| -> Result<Option<i64>> {
        let exists = st!(conn, ctx, SCHEMA_VERSION_TABLE_EXISTS)?.row([], |r| r.get::<_, bool>(0))?.unwrap_or(false);
        if !exists {
            return Ok(None);
        }
        Ok(st!(conn, ctx, SELECT_SCHEMA_VERSION)?.row([], |r| r.get::<_, Option<i64>>(0))?.flatten())
    };
    let check = |found: Option<i64>| match found {
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            location: ctx.location.clone(),
            found,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(found == Some(SCHEMA_VERSION)),
    };
    if check(version(conn)?)? {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| ctx.sqlite("BEGIN_IMMEDIATE", e))?;
    tx.execute_batch(statements::CREATE_SCHEMA_VERSION).map_err(|e| ctx.sqlite("CREATE_SCHEMA_VERSION", e))?;
    // Another process may have created or upgraded the schema while we waited for the lock.
    let found = version(&tx)?;
    if !check(found)? {
        if found.is_none() {
            tx.execute_batch(SCHEMA).map_err(|e| ctx.sqlite("schema.sql", e))?;
            st!(&tx, ctx, INSERT_SCHEMA_VERSION)?.execute(params![BASE_SCHEMA_VERSION, SCHEMA_DESCRIPTION])?;
        }
        let from = found.unwrap_or(BASE_SCHEMA_VERSION);
        for &(to, name, description, sql) in MIGRATIONS.iter().filter(|(to, ..)| *to > from) {
            tx.execute_batch(sql).map_err(|e| ctx.sqlite(name, e))?;
            st!(&tx, ctx, INSERT_SCHEMA_VERSION)?.execute(params![to, description])?;
        }
    }
    tx.commit().map_err(|e| ctx.sqlite("COMMIT", e))
}

/// The embedded SQLite store.
pub struct SqliteStore {
    ctx: Arc<Ctx>,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and schema when `create` is set.
    pub async fn open(path: impl Into<PathBuf>, create: bool) -> Result<Self> {
        let path = path.into();
        let ctx = Arc::new(Ctx {
            location: path.display().to_string(),
            path,
        });
        let c = ctx.clone();
        let conn = blocking(&ctx, move || {
            let mut conn = connect(&c, create)?;
            migrate(&mut conn, &c)?;
            Ok(conn)
        })
        .await?;
        Ok(Self {
            ctx,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.ctx.path
    }

    /// How long a statement waits for another process's lock before failing with "database is
    /// locked" (30 s by default). Callers that retry on their own, and tests that lock the file
    /// to simulate an unavailable store, set it lower.
    pub async fn set_busy_timeout(&self, timeout: Duration) -> Result<()> {
        self.call(move |conn, ctx| conn.busy_timeout(timeout).map_err(|e| ctx.sqlite("busy_timeout", e))).await
    }

    /// Runs `f` on the shared connection on the blocking pool.
    async fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection, &Ctx) -> Result<T> + Send + 'static) -> Result<T> {
        let (conn, ctx) = (self.conn.clone(), self.ctx.clone());
        blocking(&self.ctx, move || {
            // A panic mid-call drops its transaction (rolled back), so the connection is sound.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &ctx)
        })
        .await
    }

    /// Runs `f` in an immediate (write) transaction on the shared connection.
    async fn write<T: Send + 'static>(&self, f: impl FnOnce(&Connection, &Ctx) -> Result<T> + Send + 'static) -> Result<T> {
        self.call(move |conn, ctx| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| ctx.sqlite("BEGIN_IMMEDIATE", e))?;
            let out = f(&tx, ctx)?;
            tx.commit().map_err(|e| ctx.sqlite("COMMIT", e))?;
            Ok(out)
        })
        .await
    }
}

/// The model named `name` (and `version`), in any status; with no version, the only one.
fn find_model(conn: &Connection, ctx: &Ctx, name: &str, version: Option<&str>) -> Result<Option<ModelRow>> {
    if let Some(version) = version {
        return st!(conn, ctx, SELECT_MODEL_BY_NAME_VERSION)?.row(params![name, version], model_row);
    }
    let mut rows = st!(conn, ctx, SELECT_MODELS_BY_NAME)?.rows(params![name], model_row)?;
    match rows.len() {
        0 | 1 => Ok(rows.pop()),
        _ => Err(StoreError::AmbiguousModel {
            location: ctx.location.clone(),
            name: name.to_string(),
            versions: rows.into_iter().map(|m| m.version).collect(),
        }),
    }
}

/// A model's layers with their atom lists: two statements, whatever the layer count.
fn read_layers(conn: &Connection, ctx: &Ctx, model: ModelId) -> Result<Vec<LayerRow>> {
    let mut layers = st!(conn, ctx, SELECT_LAYERS_OF_MODEL)?.rows(params![model.0], |row| {
        let shape: String = row.get(4)?;
        Ok(LayerRow {
            id: LayerId(row.get(0)?),
            model,
            ordinal: row.get(1)?,
            tensor_name: row.get(2)?,
            dtype: row.get(3)?,
            shape: serde_json::from_str(&shape).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(4, Type::Text, format!("Shape {shape:?} is not a JSON array of dimensions: {e}").into())
            })?,
            parameter_count: u64_col(row, 5)?,
            byte_length: u64_col(row, 6)?,
            tensor_root: hash_col(row, 7)?,
            has_geometry: row.get(8)?,
            atoms: Vec::new(),
        })
    })?;
    let index: HashMap<LayerId, usize> = layers.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    let at = At { ctx, name: "SELECT_COEFFICIENTS_OF_MODEL" };
    st!(conn, ctx, SELECT_COEFFICIENTS_OF_MODEL)?.each(params![model.0], |row| {
        let layer = LayerId(row.get(0).map_err(|e| at.err(e))?);
        let atom = LayerAtom {
            ordinal: u64_col(row, 1).map_err(|e| at.err(e))?,
            atom: hash_col(row, 2).map_err(|e| at.err(e))?,
            byte_length: u64_col(row, 3).map_err(|e| at.err(e))?,
            coefficient: row.get(4).map_err(|e| at.err(e))?,
        };
        let i = index.get(&layer).expect("the join only yields this model's layers: this is a bug");
        layers[*i].atoms.push(atom);
        Ok(())
    })?;
    Ok(layers)
}

/// Removes a model's rows inside the caller's transaction: takes one reference per use from
/// each of its atoms and deletes the atoms left with none.
fn remove_model_rows(conn: &Connection, ctx: &Ctx, model: &ModelRow) -> Result<RemoveOutcome> {
    let id = model.id.0;
    let undercounted = st!(conn, ctx, COUNT_UNDERCOUNTED_ATOMS)?.row(params![id], |r| r.get::<_, i64>(0))?.unwrap_or(0);
    if undercounted > 0 {
        return Err(StoreError::Damaged {
            location: ctx.location.clone(),
            what: format!(
                "{undercounted} atoms of {} have a ReferenceCount below that model's own uses of them; nothing was removed",
                model.label()
            ),
        });
    }
    let released = st!(conn, ctx, RELEASE_MODEL_REFERENCES)?
        .rows(params![id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, u64_col(r, 2)?)))?;
    st!(conn, ctx, DELETE_COEFFICIENTS_OF_MODEL)?.execute(params![id])?;
    let layers = st!(conn, ctx, DELETE_LAYERS_OF_MODEL)?.execute(params![id])? as u64;
    st!(conn, ctx, DELETE_EMBEDDINGS_OF_MODEL)?.execute(params![id])?;
    st!(conn, ctx, DETACH_DERIVED_MODELS)?.execute(params![id])?;
    st!(conn, ctx, DELETE_MODEL)?.execute(params![id])?;
    let mut outcome = RemoveOutcome {
        model: model.label(),
        layers,
        atoms_freed: 0,
        bytes_freed: 0,
        atoms_kept: 0,
    };
    let mut delete = st!(conn, ctx, DELETE_UNREFERENCED_ATOM)?;
    for (atom, count, bytes) in released {
        if count == 0 {
            delete.execute(params![atom])?;
            outcome.atoms_freed += 1;
            outcome.bytes_freed += bytes;
        } else {
            outcome.atoms_kept += 1;
        }
    }
    Ok(outcome)
}

fn verify_in(conn: &Connection, ctx: &Ctx, scope: Option<ModelId>) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let models = match scope {
        Some(id) => st!(conn, ctx, SELECT_MODEL_BY_ID)?.rows(params![id.0], model_row)?,
        None => st!(conn, ctx, SELECT_MODELS)?.rows([], model_row)?,
    };
    for model in &models {
        let label = model.label();
        let layers = read_layers(conn, ctx, model.id)?;
        report.models += 1;
        report.layers += layers.len() as u64;
        for layer in &layers {
            report.damage.extend(check_layer(&label, layer));
        }
        report.damage.extend(check_model(model, &layers));
        let at = At { ctx, name: "SELECT_GEOMETRIES_OF_MODEL" };
        st!(conn, ctx, SELECT_GEOMETRIES_OF_MODEL)?.each(params![model.id.0], |row| {
            let tensor: String = row.get(0).map_err(|e| at.err(e))?;
            let parameters = u64_col(row, 1).map_err(|e| at.err(e))?;
            let wkb = row.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(|e| at.err(e))?;
            report.damage.extend(check_geometry(&label, &tensor, parameters, wkb));
            Ok(())
        })?;
    }

    let mut uses = st!(conn, ctx, SELECT_ATOM_USES)?;
    let mut atoms = match scope {
        Some(_) => st!(conn, ctx, VERIFY_ATOMS_OF_MODEL)?,
        None => st!(conn, ctx, VERIFY_ATOMS)?,
    };
    let at = atoms.at;
    let each = |row: &Row<'_>| -> Result<()> {
        let get = |e| at.err(e);
        let check = AtomCheck {
            hash: hash_col(row, 0).map_err(get)?,
            encoding: row.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(get)?,
            recorded_len: row.get(2).map_err(get)?,
            recorded_count: row.get(3).map_err(get)?,
            uses: u64_col(row, 4).map_err(get)?,
            payload: row.get_ref(6).and_then(|v| Ok(v.as_blob()?)).map_err(get)?,
        };
        report.atoms += 1;
        report.atom_bytes += check.payload.len() as u64;
        let mut found = check_atom(&check);
        if found.iter_mut().any(|d| d.used_by_mut().is_some()) {
            let atom_id: i64 = row.get(5).map_err(get)?;
            let used_by = uses.rows(params![atom_id], |r| {
                Ok(AtomUse {
                    model: r.get(0)?,
                    tensor: r.get(1)?,
                    ordinal: u64_col(r, 2)?,
                })
            })?;
            for d in &mut found {
                if let Some(list) = d.used_by_mut() {
                    list.clone_from(&used_by);
                }
            }
        }
        report.damage.extend(found);
        Ok(())
    };
    match scope {
        Some(id) => atoms.each(params![id.0], each)?,
        None => atoms.each([], each)?,
    }

    if scope.is_none() {
        let dangling = st!(conn, ctx, FOREIGN_KEY_CHECK)?.rows([], |r| {
            Ok(Damage::ForeignKey {
                table: r.get(0)?,
                row: r.get::<_, Option<i64>>(1)?.unwrap_or(-1),
                parent: r.get(2)?,
            })
        })?;
        report.damage.extend(dangling);
    }
    Ok(report)
}

impl SqliteStore {
    /// [`Store::begin_model`] and [`Store::begin_derived_model`]: the writer's connection and
    /// transaction, and the model's row (with its lineage, if any) inside it.
    async fn begin(&self, model: &NewModel, lineage: Option<&ModelLineage>) -> Result<BeginModel> {
        let (ctx, m, lineage) = (self.ctx.clone(), model.clone(), lineage.cloned());
        let begun = blocking(&self.ctx, move || {
            let conn = connect(&ctx, false)?;
            // Larger than the default 2 MiB so a big transaction spills to the WAL in fewer steps.
            conn.pragma_update(None, "cache_size", -64 * 1024).map_err(|e| ctx.sqlite("cache_size", e))?;
            conn.execute_batch(statements::BEGIN_IMMEDIATE).map_err(|e| ctx.sqlite("BEGIN_IMMEDIATE", e))?;
            let model_id = {
                if let Some(existing) = find_model(&conn, &ctx, &m.name, Some(&m.version))? {
                    if existing.status == ModelStatus::Ready {
                        return Ok(Err(existing)); // dropping the connection rolls back
                    }
                    // Left by a writer that committed its row but not its layers: only another
                    // implementation can do that, but a row in this state must not block ingest.
                    remove_model_rows(&conn, &ctx, &existing)?;
                }
                st!(&conn, &ctx, INSERT_MODEL)?.execute(params![
                    m.name,
                    m.version,
                    m.architecture,
                    m.format,
                    m.tokenizer_kind,
                    db_int(m.parameter_count),
                    db_int(m.tensor_count),
                    m.config_json,
                    m.tokenizer_material,
                    lineage.as_ref().map(|l| l.parent.0),
                    lineage.as_ref().map(|l| l.derived_by.as_str()),
                ])?;
                ModelId(conn.last_insert_rowid())
            };
            Ok(Ok(WriterState {
                conn,
                model: model_id,
                tensor_count: m.tensor_count,
                atoms: HashMap::new(),
            }))
        })
        .await?;
        Ok(match begun {
            Ok(state) => BeginModel::Writer(Box::new(SqliteWriter {
                ctx: self.ctx.clone(),
                model: state.model,
                state: Some(state),
            })),
            Err(existing) => BeginModel::Exists(Box::new(existing)),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn location(&self) -> &str {
        &self.ctx.location
    }

    async fn begin_model(&self, model: &NewModel) -> Result<BeginModel> {
        self.begin(model, None).await
    }

    async fn list_models(&self) -> Result<Vec<ModelRow>> {
        self.call(|conn, ctx| st!(conn, ctx, SELECT_MODELS)?.rows([], model_row)).await
    }

    async fn model(&self, name: &str, version: Option<&str>) -> Result<Option<ModelRow>> {
        let (name, version) = (name.to_string(), version.map(str::to_string));
        self.call(move |conn, ctx| {
            let found = find_model(conn, ctx, &name, version.as_deref())?;
            Ok(found.filter(|m| m.status == ModelStatus::Ready))
        })
        .await
    }

    async fn layers(&self, model: ModelId) -> Result<Vec<LayerRow>> {
        self.call(move |conn, ctx| {
            let tx = conn.transaction().map_err(|e| ctx.sqlite("BEGIN", e))?;
            read_layers(&tx, ctx, model)
        })
        .await
    }

    async fn fetch_atoms(&self, atoms: &[Hash256]) -> Result<Vec<FetchedAtom>> {
        let mut seen = std::collections::HashSet::new();
        let wanted: Vec<Hash256> = atoms.iter().copied().filter(|h| seen.insert(*h)).collect();
        self.call(move |conn, ctx| {
            let mut found: HashMap<Hash256, (String, Vec<u8>)> = HashMap::with_capacity(wanted.len());
            let mut fetch = st!(conn, ctx, FETCH_ATOMS)?;
            for batch in wanted.chunks(FETCH_BATCH_ATOMS) {
                for (hash, encoding, payload) in
                    fetch.rows(params![hashes_json(batch)], |r| Ok((hash_col(r, 0)?, r.get(1)?, r.get(2)?)))?
                {
                    found.insert(hash, (encoding, payload));
                }
            }
            let missing: Vec<&Hash256> = wanted.iter().filter(|h| !found.contains_key(h)).collect();
            if let Some(first) = missing.first() {
                return Err(StoreError::MissingAtoms {
                    location: ctx.location.clone(),
                    count: missing.len(),
                    first: **first,
                });
            }
            Ok(wanted
                .into_iter()
                .map(|hash| {
                    let (encoding, payload) = found.remove(&hash).expect("checked above");
                    FetchedAtom { hash, encoding, payload }
                })
                .collect())
        })
        .await
    }

    async fn reference_counts(&self, atoms: &[Hash256]) -> Result<Vec<Option<u64>>> {
        let wanted = atoms.to_vec();
        self.call(move |conn, ctx| {
            let mut counts = HashMap::new();
            let mut select = st!(conn, ctx, SELECT_REFERENCE_COUNTS)?;
            for batch in wanted.chunks(FETCH_BATCH_ATOMS) {
                for (hash, count) in select.rows(params![hashes_json(batch)], |r| Ok((hash_col(r, 0)?, u64_col(r, 1)?)))? {
                    counts.insert(hash, count);
                }
            }
            Ok(wanted.iter().map(|h| counts.get(h).copied()).collect())
        })
        .await
    }

    async fn model_material(&self, model: ModelId) -> Result<Option<ModelMaterial>> {
        self.call(move |conn, ctx| {
            st!(conn, ctx, SELECT_MODEL_MATERIAL)?.row(params![model.0], |r| {
                Ok(ModelMaterial { config_json: r.get(0)?, tokenizer_kind: r.get(1)?, tokenizer_material: r.get(2)? })
            })
        })
        .await
    }

    async fn layer_geometry(&self, layer: LayerId) -> Result<Option<Vec<u8>>> {
        self.call(move |conn, ctx| {
            Ok(st!(conn, ctx, SELECT_LAYER_GEOMETRY)?.row(params![layer.0], |r| r.get::<_, Option<Vec<u8>>>(0))?.flatten())
        })
        .await
    }

    async fn remove_model(&self, name: &str, version: Option<&str>) -> Result<RemoveOutcome> {
        let (name, version) = (name.to_string(), version.map(str::to_string));
        self.write(move |conn, ctx| {
            let model = find_model(conn, ctx, &name, version.as_deref())?.ok_or_else(|| StoreError::ModelNotFound {
                location: ctx.location.clone(),
                name: name.clone(),
                version: version.clone(),
            })?;
            remove_model_rows(conn, ctx, &model)
        })
        .await
    }

    async fn begin_derived_model(&self, model: &NewModel, lineage: &ModelLineage) -> Result<BeginModel> {
        self.begin(model, Some(lineage)).await
    }

    async fn verify(&self, model: Option<ModelId>) -> Result<VerifyReport> {
        self.call(move |conn, ctx| {
            // One read transaction: a consistent snapshot even while an ingest commits.
            let tx = conn.transaction().map_err(|e| ctx.sqlite("BEGIN", e))?;
            verify_in(&tx, ctx, model)
        })
        .await
    }

    async fn put_content_atoms(&self, atoms: &[ContentAtom]) -> Result<Vec<ContentAtomId>> {
        let atoms = atoms.to_vec();
        self.write(move |conn, ctx| {
            let mut upsert = st!(conn, ctx, UPSERT_CONTENT_ATOM)?;
            let mut ids = Vec::with_capacity(atoms.len());
            for atom in &atoms {
                let id = upsert.row(
                    params![&atom.hash().0[..], atom.modality, atom.subtype, atom.canonical_text, atom.payload],
                    |r| r.get(0),
                )?;
                ids.push(ContentAtomId(id.expect("UPSERT ... RETURNING yields one row: this is a bug")));
            }
            Ok(ids)
        })
        .await
    }

    async fn put_embeddings(&self, model: ModelId, embeddings: &[Embedding]) -> Result<()> {
        for e in embeddings {
            if e.vector.is_empty() || e.vector.len() > MAX_EMBEDDING_DIMENSION {
                return Err(StoreError::InvalidRecord {
                    location: self.ctx.location.clone(),
                    what: format!(
                        "embedding of atom {} has {} dimensions; 1 to {MAX_EMBEDDING_DIMENSION} are storable",
                        e.atom.0,
                        e.vector.len()
                    ),
                });
            }
        }
        let embeddings = embeddings.to_vec();
        self.write(move |conn, ctx| {
            let mut next_id = st!(conn, ctx, NEXT_EMBEDDING_ID)?;
            let mut delete_changed = st!(conn, ctx, DELETE_CHANGED_EMBEDDING)?;
            let mut insert = st!(conn, ctx, INSERT_EMBEDDING)?;
            for e in &embeddings {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                let [x, y, z] = crate::search::coarse_key(&e.vector);
                let coarse = encode_point_z(x, y, z);
                let id: i64 = next_id.row([], |row| row.get(0))?.unwrap_or(1);
                delete_changed.execute(params![e.atom.0, model.0, &bytes[..]])?;
                insert.execute(params![id, e.atom.0, model.0, e.vector.len() as i64, &coarse[..], bytes])?;
            }
            Ok(())
        })
        .await
    }

    async fn nearest_embeddings(&self, model: ModelId, query: &[f32], k: usize) -> Result<Vec<Neighbor>> {
        let query = query.to_vec();
        self.call(move |conn, ctx| {
            let mut best = Vec::new();
            let at = At { ctx, name: "SELECT_EMBEDDINGS_OF_MODEL" };
            st!(conn, ctx, SELECT_EMBEDDINGS_OF_MODEL)?.each(params![model.0], |row| {
                let get = |e| at.err(e);
                let atom = ContentAtomId(row.get(0).map_err(get)?);
                let dimension: i64 = row.get(2).map_err(get)?;
                if dimension as usize != query.len() {
                    return Err(ctx.invalid(format!(
                        "the query has {} dimensions but model {}'s embeddings have {dimension}",
                        query.len(),
                        model.0
                    )));
                }
                let bytes = row.get_ref(3).and_then(|v| Ok(v.as_blob()?)).map_err(get)?;
                let vector: Vec<f32> =
                    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
                best.push(Neighbor {
                    atom,
                    atom_hash: hash_col(row, 1).map_err(get)?,
                    cosine: cosine(&query, &vector),
                });
                Ok(())
            })?;
            best.sort_by(|a, b| b.cosine.total_cmp(&a.cosine).then(a.atom.cmp(&b.atom)));
            best.truncate(k);
            Ok(best)
        })
        .await
    }

    async fn embedding_watermark(&self, model: ModelId) -> Result<EmbeddingWatermark> {
        self.call(move |conn, ctx| {
            let mark = st!(conn, ctx, EMBEDDING_WATERMARK)?.row(params![model.0], |row| {
                Ok(EmbeddingWatermark { count: row.get::<_, i64>(0)?.max(0) as u64, max_id: row.get(1)? })
            })?;
            Ok(mark.unwrap_or_default())
        })
        .await
    }

    async fn embeddings_after(&self, model: ModelId, after: i64, limit: usize) -> Result<Vec<StoredEmbedding>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn, ctx| {
            st!(conn, ctx, SELECT_EMBEDDINGS_AFTER)?.rows(params![model.0, after, limit], |row| {
                Ok(StoredEmbedding {
                    id: row.get(0)?,
                    atom: ContentAtomId(row.get(1)?),
                    modality: row.get(2)?,
                    vector: f32_blob(row, 3)?,
                })
            })
        })
        .await
    }

    async fn embeddings_of_atoms(&self, model: ModelId, atoms: &[ContentAtomId]) -> Result<Vec<Option<Vec<f32>>>> {
        let atoms = atoms.to_vec();
        self.call(move |conn, ctx| {
            let mut select = st!(conn, ctx, SELECT_EMBEDDING_OF_ATOM)?;
            atoms.iter().map(|a| select.row(params![a.0, model.0], |row| f32_blob(row, 0))).collect()
        })
        .await
    }

    async fn content_atoms(&self, atoms: &[ContentAtomId]) -> Result<Vec<Option<ContentAtomRow>>> {
        let atoms = atoms.to_vec();
        self.call(move |conn, ctx| {
            let mut select = st!(conn, ctx, SELECT_CONTENT_ATOM)?;
            atoms
                .iter()
                .map(|a| {
                    select.row(params![a.0], |row| {
                        Ok(ContentAtomRow {
                            id: ContentAtomId(row.get(0)?),
                            hash: hash_col(row, 1)?,
                            modality: row.get(2)?,
                            subtype: row.get(3)?,
                            text: row.get(4)?,
                            payload_bytes: row.get::<_, Option<i64>>(5)?.map(|n| n.max(0) as u64),
                        })
                    })
                })
                .collect()
        })
        .await
    }

    async fn record_request(&self, request: &NewRequest) -> Result<RequestId> {
        let r = request.clone();
        self.write(move |conn, ctx| {
            let models = serde_json::to_string(&r.model_names).expect("strings serialise");
            st!(conn, ctx, INSERT_REQUEST)?.execute(params![r.request_key, r.tenant, r.operation, models])?;
            let id = st!(conn, ctx, SELECT_REQUEST_ID_BY_KEY)?.row(params![r.request_key], |row| row.get(0))?;
            Ok(RequestId(id.expect("inserted or already present: this is a bug")))
        })
        .await
    }

    async fn find_request(&self, request_key: &str) -> Result<Option<RequestId>> {
        let key = request_key.to_string();
        self.call(move |conn, ctx| Ok(st!(conn, ctx, SELECT_REQUEST_ID_BY_KEY)?.row(params![key], |row| row.get(0))?.map(RequestId)))
            .await
    }

    async fn complete_request(&self, request: RequestId, completion: &RequestCompletion) -> Result<()> {
        let c = completion.clone();
        self.write(move |conn, ctx| {
            let n = st!(conn, ctx, COMPLETE_REQUEST)?.execute(params![request.0, c.status.as_str(), c.duration_ms, c.error_message])?;
            if n == 0 {
                return Err(ctx.invalid(format!("no inference request {}", request.0)));
            }
            Ok(())
        })
        .await
    }

    async fn record_step(&self, step: &StepRecord) -> Result<()> {
        let s = step.clone();
        self.write(move |conn, ctx| {
            st!(conn, ctx, INSERT_STEP)?.execute(params![
                s.request.0,
                s.ordinal,
                s.operation,
                s.model.map(|m| m.0),
                s.weights_root.as_ref().map(|h| h.0.to_vec()),
                s.parameters_json,
                s.status.as_str(),
                s.duration_ms,
                s.tenant,
            ])?;
            Ok(())
        })
        .await
    }

    async fn record_usage(&self, usage: &UsageRecord) -> Result<()> {
        let u = usage.clone();
        self.write(move |conn, ctx| {
            st!(conn, ctx, INSERT_USAGE)?.execute(params![
                u.tenant,
                u.request.map(|r| r.0),
                u.operation,
                u.model.map(|m| m.0),
                db_int(u.input_tokens),
                db_int(u.output_tokens),
                u.compute_ms,
                u.usage_key,
                u.model_name,
                db_int(u.vectors),
                u.billing_units,
                u.status_code,
            ])?;
            Ok(())
        })
        .await
    }

    async fn add_lineage_edge(&self, edge: &LineageEdge) -> Result<()> {
        let e = edge.clone();
        self.write(move |conn, ctx| {
            let node_id = |node: GraphNode| -> Result<i64> {
                let exists = st!(conn, ctx, GRAPH_NODE_TARGET_EXISTS)?
                    .row(params![node.kind(), node.ref_id()], |r| r.get::<_, bool>(0))?
                    .unwrap_or(false);
                if !exists {
                    return Err(ctx.invalid(format!("lineage edge names {} {}, which does not exist", node.kind(), node.ref_id())));
                }
                let id = st!(conn, ctx, UPSERT_GRAPH_NODE)?.row(params![node.kind(), node.ref_id()], |r| r.get(0))?;
                Ok(id.expect("UPSERT ... RETURNING yields one row: this is a bug"))
            };
            let (from, to) = (node_id(e.from)?, node_id(e.to)?);
            st!(conn, ctx, INSERT_EDGE)?.execute(params![from, to, e.relation, e.weight, e.request.map(|r| r.0)])?;
            Ok(())
        })
        .await
    }

    async fn lineage(&self, request: RequestId) -> Result<Option<Lineage>> {
        self.call(move |conn, ctx| {
            let tx = conn.transaction().map_err(|e| ctx.sqlite("BEGIN", e))?;
            let conn = &*tx;
            let Some((req, status, duration_ms, error_message)) = st!(conn, ctx, SELECT_REQUEST)?.row(params![request.0], |r| {
                let models: String = r.get(3)?;
                let status: String = r.get(4)?;
                Ok((
                    NewRequest {
                        request_key: r.get(0)?,
                        tenant: r.get(1)?,
                        operation: r.get(2)?,
                        model_names: serde_json::from_str(&models).unwrap_or_default(),
                    },
                    status,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })?
            else {
                return Ok(None);
            };
            let run_status = |text: String, i: usize| {
                RunStatus::parse(&text).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, format!("unknown status {text:?}").into())
                })
            };
            let status = run_status(status, 4).map_err(|e| ctx.sqlite("SELECT_REQUEST", e))?;
            let steps = st!(conn, ctx, SELECT_STEPS_OF_REQUEST)?.rows(params![request.0], |r| {
                Ok(StepRecord {
                    request,
                    ordinal: r.get(0)?,
                    operation: r.get(1)?,
                    model: r.get::<_, Option<i64>>(2)?.map(ModelId),
                    weights_root: opt_hash_col(r, 3)?,
                    parameters_json: r.get(4)?,
                    status: run_status(r.get(5)?, 5)?,
                    duration_ms: r.get(6)?,
                    tenant: r.get(7)?,
                })
            })?;
            let edges = st!(conn, ctx, SELECT_EDGES_OF_REQUEST)?.rows(params![request.0], |r| {
                let node = |kind: usize| -> rusqlite::Result<GraphNode> {
                    let k: String = r.get(kind)?;
                    GraphNode::new(&k, r.get(kind + 1)?).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(kind, Type::Text, format!("unknown node kind {k:?}").into())
                    })
                };
                Ok(LineageEdge {
                    from: node(0)?,
                    to: node(2)?,
                    relation: r.get(4)?,
                    weight: r.get(5)?,
                    request: Some(request),
                })
            })?;
            let usage = st!(conn, ctx, SELECT_USAGE_OF_REQUEST)?.rows(params![request.0], |r| {
                Ok(UsageRecord {
                    usage_key: None,
                    tenant: r.get(0)?,
                    request: Some(request),
                    operation: r.get(1)?,
                    model: r.get::<_, Option<i64>>(2)?.map(ModelId),
                    model_name: r.get(6)?,
                    input_tokens: u64_col(r, 3)?,
                    output_tokens: u64_col(r, 4)?,
                    vectors: u64_col(r, 7)?,
                    compute_ms: r.get(5)?,
                    billing_units: r.get(8)?,
                    status_code: r.get(9)?,
                })
            })?;
            Ok(Some(Lineage {
                request: req,
                status,
                duration_ms,
                error_message,
                steps,
                edges,
                usage,
            }))
        })
        .await
    }

    async fn governance(&self) -> Result<GovernanceRows> {
        self.call(|conn, ctx| {
            let tx = conn.transaction().map_err(|e| ctx.sqlite("BEGIN", e))?;
            let tenants = st!(&tx, ctx, SELECT_TENANTS)?.rows([], |r| {
                Ok(TenantSettings {
                    name: r.get(0)?,
                    plan: r.get(1)?,
                    requests_per_minute: opt_u64_col(r, 2)?,
                    tokens_per_minute: opt_u64_col(r, 3)?,
                })
            })?;
            let keys = st!(&tx, ctx, SELECT_API_KEYS)?.rows([], |r| {
                Ok(ApiKeyRow {
                    key_id: r.get(0)?,
                    tenant: r.get(1)?,
                    label: r.get(2)?,
                    key_hash: hash_col(r, 3)?,
                    created_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                })
            })?;
            let rules = st!(&tx, ctx, SELECT_ACCESS_RULES)?.rows([], |r| {
                let effect: String = r.get(3)?;
                Ok(AccessRule {
                    rule_id: r.get(0)?,
                    tenant: r.get(1)?,
                    position: r.get(2)?,
                    effect: RuleEffect::parse(&effect).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(3, Type::Text, format!("unknown rule effect {effect:?}").into())
                    })?,
                    operation: r.get(4)?,
                    model_pattern: r.get(5)?,
                })
            })?;
            let rates = st!(&tx, ctx, SELECT_RATES)?.rows([], |r| {
                Ok(OperationRate {
                    plan: r.get(0)?,
                    operation: r.get(1)?,
                    per_request: r.get(2)?,
                    per_1k_input_tokens: r.get(3)?,
                    per_1k_output_tokens: r.get(4)?,
                    per_vector: r.get(5)?,
                })
            })?;
            Ok(GovernanceRows { tenants, keys, rules, rates })
        })
        .await
    }

    async fn put_tenant(&self, tenant: &TenantSettings) -> Result<()> {
        let t = tenant.clone();
        self.write(move |conn, ctx| {
            st!(conn, ctx, UPSERT_TENANT)?.execute(params![
                t.name,
                t.plan,
                t.requests_per_minute.map(db_int),
                t.tokens_per_minute.map(db_int)
            ])?;
            Ok(())
        })
        .await
    }

    async fn add_api_key(&self, key: &NewApiKey) -> Result<()> {
        let k = key.clone();
        self.write(move |conn, ctx| {
            let taken = st!(conn, ctx, API_KEY_EXISTS)?.row(params![k.key_id, &k.key_hash.0[..]], |r| r.get::<_, bool>(0))?;
            if taken.unwrap_or(false) {
                return Err(ctx.invalid(format!("an API key with id {} (or the same secret) already exists", k.key_id)));
            }
            st!(conn, ctx, ENSURE_TENANT)?.execute(params![k.tenant])?;
            st!(conn, ctx, INSERT_API_KEY)?.execute(params![k.key_id, k.tenant, k.label, &k.key_hash.0[..]])?;
            Ok(())
        })
        .await
    }

    async fn revoke_api_key(&self, key_id: &str) -> Result<bool> {
        let id = key_id.to_string();
        self.write(move |conn, ctx| Ok(st!(conn, ctx, REVOKE_API_KEY)?.execute(params![id])? > 0)).await
    }

    async fn add_access_rule(&self, rule: &NewAccessRule) -> Result<i64> {
        let r = rule.clone();
        self.write(move |conn, ctx| {
            st!(conn, ctx, ENSURE_TENANT)?.execute(params![r.tenant])?;
            let id = st!(conn, ctx, INSERT_ACCESS_RULE)?
                .row(params![r.tenant, r.effect.as_str(), r.operation, r.model_pattern], |row| row.get(0))?;
            Ok(id.expect("INSERT ... RETURNING yields one row: this is a bug"))
        })
        .await
    }

    async fn remove_access_rule(&self, rule_id: i64) -> Result<bool> {
        self.write(move |conn, ctx| Ok(st!(conn, ctx, DELETE_ACCESS_RULE)?.execute(params![rule_id])? > 0)).await
    }

    async fn put_rate(&self, rate: &OperationRate) -> Result<()> {
        let r = rate.clone();
        self.write(move |conn, ctx| {
            st!(conn, ctx, UPSERT_RATE)?.execute(params![
                r.plan,
                r.operation,
                r.per_request,
                r.per_1k_input_tokens,
                r.per_1k_output_tokens,
                r.per_vector
            ])?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        let q = query.clone();
        self.call(move |conn, ctx| {
            st!(conn, ctx, SELECT_USAGE)?.rows(params![q.tenant, q.since, db_int(q.limit as u64)], |r| {
                Ok(UsageRow {
                    usage_id: r.get(0)?,
                    tenant: r.get(1)?,
                    request_id: r.get(2)?,
                    operation: r.get(3)?,
                    model: r.get(4)?,
                    input_tokens: u64_col(r, 5)?,
                    output_tokens: u64_col(r, 6)?,
                    vectors: u64_col(r, 7)?,
                    duration_ms: r.get(8)?,
                    billing_units: r.get(9)?,
                    status: r.get(10)?,
                    recorded_at: r.get(11)?,
                })
            })
        })
        .await
    }
}

/// A model writer's connection, inside its open transaction, and what it has learnt.
struct WriterState {
    conn: Connection,
    model: ModelId,
    tensor_count: u64,
    /// Atom id and byte length of every atom this model has put or named, by hash.
    atoms: HashMap<Hash256, (i64, u64)>,
}

/// Writes one model inside one transaction on its own connection.
struct SqliteWriter {
    ctx: Arc<Ctx>,
    model: ModelId,
    /// `None` once a call failed: the connection was dropped, which rolled everything back.
    state: Option<WriterState>,
}

impl SqliteWriter {
    /// Runs `f` on the writer's connection on the blocking pool. A failed call discards the
    /// writer: a statement that failed part-way through a batch leaves the transaction in a
    /// state nobody should commit.
    async fn with_state<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut WriterState, &Ctx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut state = self.take_state()?;
        let ctx = self.ctx.clone();
        let (state, result) = blocking(&self.ctx, move || {
            let result = f(&mut state, &ctx);
            Ok((state, result))
        })
        .await?;
        if result.is_ok() {
            self.state = Some(state);
        }
        result
    }

    fn take_state(&mut self) -> Result<WriterState> {
        self.state.take().ok_or_else(|| StoreError::Task {
            location: self.ctx.location.clone(),
            what: "this model writer failed earlier and was discarded (everything it wrote was rolled back)".into(),
        })
    }
}

/// The stored id and length of the atom `hash`, from the writer's map or the database.
fn resolve_atom(state: &mut WriterState, ctx: &Ctx, hash: &Hash256) -> Result<Option<(i64, u64)>> {
    if let Some(&found) = state.atoms.get(hash) {
        return Ok(Some(found));
    }
    let found = st!(&state.conn, ctx, SELECT_ATOM_BY_HASH)?.row(params![&hash.0[..]], |r| Ok((r.get(0)?, u64_col(r, 1)?)))?;
    if let Some(found) = found {
        state.atoms.insert(*hash, found);
    }
    Ok(found)
}

#[async_trait]
impl ModelWriter for SqliteWriter {
    fn model(&self) -> ModelId {
        self.model
    }

    async fn put_atoms(&mut self, atoms: Vec<AtomRecord>) -> Result<PutAtomsOutcome> {
        self.with_state(move |state, ctx| {
            let mut outcome = PutAtomsOutcome::default();
            for atom in &atoms {
                if resolve_atom(state, ctx, &atom.hash)?.is_some() {
                    outcome.reused += 1;
                    continue;
                }
                let signature = atom.signature.map(|s| encode_point_z(s.mean, s.std_dev, s.max_abs));
                st!(&state.conn, ctx, INSERT_ATOM)?.execute(params![
                    &atom.hash.0[..],
                    atom.encoding.tag(),
                    atom.payload.len() as i64,
                    signature.as_ref().map(|s| &s[..]),
                    &atom.payload,
                ])?;
                state.atoms.insert(atom.hash, (state.conn.last_insert_rowid(), atom.payload.len() as u64));
                outcome.new += 1;
                outcome.bytes_written += atom.payload.len() as u64;
            }
            Ok(outcome)
        })
        .await
    }

    async fn put_layers(&mut self, layers: Vec<LayerRecord>) -> Result<()> {
        self.with_state(move |state, ctx| {
            let mut uses: HashMap<i64, i64> = HashMap::new();
            for layer in &layers {
                layer.check(&ctx.location)?;
                if layer.dtype.bytes_for(layer.parameter_count()) != Some(layer.byte_length) {
                    return Err(ctx.invalid(format!(
                        "layer {}: {} elements of {} do not take {} bytes",
                        layer.tensor_name,
                        layer.parameter_count(),
                        layer.dtype,
                        layer.byte_length
                    )));
                }
                let mut ids = Vec::with_capacity(layer.atoms.len());
                let mut bytes = 0;
                for (i, hash) in layer.atoms.iter().enumerate() {
                    let (id, len) = resolve_atom(state, ctx, hash)?.ok_or_else(|| {
                        ctx.invalid(format!("layer {}: atom {i} ({hash}) was never put", layer.tensor_name))
                    })?;
                    ids.push(id);
                    bytes += len;
                }
                if bytes != layer.byte_length {
                    return Err(ctx.invalid(format!(
                        "layer {}: its atoms hold {bytes} bytes, not its {} bytes",
                        layer.tensor_name, layer.byte_length
                    )));
                }
                let shape = serde_json::to_string(&layer.shape).expect("numbers serialise");
                st!(&state.conn, ctx, INSERT_LAYER)?.execute(params![
                    state.model.0,
                    layer.ordinal,
                    layer.tensor_name,
                    layer.dtype.tag(),
                    shape,
                    db_int(layer.parameter_count()),
                    db_int(layer.byte_length),
                    &layer.tensor_root.0[..],
                    layer.geometry,
                ])?;
                let layer_id = state.conn.last_insert_rowid();
                let mut insert = st!(&state.conn, ctx, INSERT_COEFFICIENT)?;
                for (ordinal, id) in ids.iter().enumerate() {
                    insert.execute(params![layer_id, ordinal as i64, id])?;
                    *uses.entry(*id).or_insert(0) += 1;
                }
            }
            let mut add = st!(&state.conn, ctx, ADD_REFERENCES)?;
            for (id, n) in uses {
                add.execute(params![id, n])?;
            }
            Ok(())
        })
        .await
    }

    async fn commit(mut self: Box<Self>, seal: ModelSeal) -> Result<ModelRow> {
        let root = seal.weights_root;
        let state = self.take_state()?;
        let ctx = self.ctx.clone();
        blocking(&self.ctx, move || {
            let conn = &state.conn;
            let id = state.model.0;
            let layers = st!(conn, &ctx, SELECT_LAYER_ROOTS_OF_MODEL)?.rows(params![id], |r| Ok((r.get::<_, String>(0)?, hash_col(r, 1)?)))?;
            if layers.len() as u64 != state.tensor_count {
                return Err(ctx.invalid(format!(
                    "commit after {} of the model's {} layers; nothing was stored",
                    layers.len(),
                    state.tensor_count
                )));
            }
            let computed = weights_root(layers.iter().map(|(name, root)| (name.as_str(), *root)));
            if computed != root {
                return Err(ctx.invalid(format!(
                    "the layers give weights root {computed}, not {root}; nothing was stored"
                )));
            }
            st!(conn, &ctx, SEAL_MODEL)?.execute(params![id, &root.0[..], &seal.source_file_hash.0[..]])?;
            conn.execute_batch(statements::COMMIT).map_err(|e| ctx.sqlite("COMMIT", e))?;
            let row = st!(conn, &ctx, SELECT_MODEL_BY_ID)?.row(params![id], model_row)?;
            row.ok_or_else(|| ctx.invalid(format!("model {id} vanished after its commit")))
        })
        .await
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        // Closing the connection rolls the transaction back.
        drop(self.take_state()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan of `sql` with its parameters unbound, one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plans");
        let mut rows = stmt.raw_query(); // parameters left unbound: the plan does not depend on them
        let mut steps = Vec::new();
        while let Some(row) = rows.next().expect("row") {
            steps.push(row.get::<_, String>(3).expect("detail"));
        }
        steps
    }

    /// The statements that run per atom or per batch must find rows through an index, never by
    /// scanning the atoms or the coefficients (a scan is the whole store).
    #[test]
    fn hot_statements_search_their_indexes() {
        let conn = Connection::open_in_memory().expect("in memory");
        conn.execute_batch(SCHEMA).expect("schema");
        for (name, sql, needle) in [
            ("FETCH_ATOMS", statements::FETCH_ATOMS, "SEARCH TensorAtoms USING INDEX"),
            ("SELECT_REFERENCE_COUNTS", statements::SELECT_REFERENCE_COUNTS, "SEARCH TensorAtoms USING INDEX"),
            ("SELECT_ATOM_BY_HASH", statements::SELECT_ATOM_BY_HASH, "SEARCH TensorAtoms USING INDEX"),
            ("VERIFY_ATOMS", statements::VERIFY_ATOMS, "USING COVERING INDEX IX_TensorAtomCoefficients_AtomId (AtomId=?)"),
            ("SELECT_ATOM_USES", statements::SELECT_ATOM_USES, "IX_TensorAtomCoefficients_AtomId (AtomId=?)"),
            ("SELECT_COEFFICIENTS_OF_MODEL", statements::SELECT_COEFFICIENTS_OF_MODEL, "(ModelId=?)"),
            ("RELEASE_MODEL_REFERENCES", statements::RELEASE_MODEL_REFERENCES, "(ModelId=?)"),
            ("SELECT_EMBEDDINGS_OF_MODEL", statements::SELECT_EMBEDDINGS_OF_MODEL, "IX_AtomEmbeddings_ModelId (ModelId=?)"),
            ("SELECT_EMBEDDINGS_AFTER", statements::SELECT_EMBEDDINGS_AFTER, "IX_AtomEmbeddings_ModelId (ModelId=? AND rowid>?)"),
            ("EMBEDDING_WATERMARK", statements::EMBEDDING_WATERMARK, "IX_AtomEmbeddings_ModelId (ModelId=?)"),
            ("SELECT_EMBEDDING_OF_ATOM", statements::SELECT_EMBEDDING_OF_ATOM, "(AtomId=? AND ModelId=?)"),
        ] {
            let steps = plan(&conn, sql);
            assert!(steps.iter().any(|s| s.contains(needle)), "{name} does not use its index: {steps:?}");
            let scans: Vec<&String> = steps
                .iter()
                .filter(|s| s.starts_with("SCAN") && !s.contains("json_each") && !s.starts_with("SCAN r") && *s != "SCAN a")
                .collect();
            assert!(scans.is_empty(), "{name} scans a table: {steps:?}");
        }
    }
}
