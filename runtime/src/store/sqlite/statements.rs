//! Every SQL statement the SQLite store sends, by name, so they can be read and reviewed in one
//! place. Errors name the statement that failed. The schema itself is `schema.sql`.
//!
//! Hashes travel as 32-byte blobs. Lists of hashes travel as one JSON array of hex strings
//! (`json_each` + `unhex`, SQLite 3.41+), so a batch of any size is one statement with one
//! parameter; SQL Server's `OPENJSON` + `CONVERT(BINARY(32), value, 2)` does the same.

// ---- connection and schema ----------------------------------------------------------------

pub const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
pub const COMMIT: &str = "COMMIT";

pub const CREATE_SCHEMA_VERSION: &str = "CREATE TABLE IF NOT EXISTS SchemaVersion (
    Version     INTEGER PRIMARY KEY,
    Description TEXT NOT NULL,
    AppliedAt   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT";

pub const SCHEMA_VERSION_TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'SchemaVersion')";

pub const SELECT_SCHEMA_VERSION: &str = "SELECT MAX(Version) FROM SchemaVersion";

pub const INSERT_SCHEMA_VERSION: &str = "INSERT INTO SchemaVersion (Version, Description) VALUES (?1, ?2)";

/// Version 1 → 2: models' lineage (the columns `schema.sql` declares for a new store, appended
/// here because SQLite adds columns only at the end of a table).
pub const MIGRATE_TO_2: &str = "ALTER TABLE Models ADD COLUMN ParentModelId INTEGER NULL REFERENCES Models (ModelId);
ALTER TABLE Models ADD COLUMN DerivedBy TEXT NULL;
CREATE INDEX IF NOT EXISTS IX_Models_ParentModelId ON Models (ParentModelId);";

/// Version 2 → 3: governance. Tenants (plan and limits), API keys by SHA-256 (the secret is never
/// stored), ordered access rules, per-operation rates of each plan (the `standard` plan seeded),
/// and the ledger's columns for one row per request: the model as named, vectors, billing units,
/// the status answered, and a unique key so that a retried write is not counted twice.
pub const MIGRATE_TO_3: &str = "CREATE TABLE IF NOT EXISTS Tenants (
    TenantName        TEXT    PRIMARY KEY,
    RatePlan          TEXT    NOT NULL DEFAULT 'standard',
    RequestsPerMinute INTEGER NULL CHECK (RequestsPerMinute IS NULL OR RequestsPerMinute > 0),
    TokensPerMinute   INTEGER NULL CHECK (TokensPerMinute IS NULL OR TokensPerMinute > 0),
    CreatedAt         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE TABLE IF NOT EXISTS ApiKeys (
    KeyId      TEXT PRIMARY KEY,
    TenantName TEXT NOT NULL REFERENCES Tenants (TenantName),
    Label      TEXT NOT NULL DEFAULT '',
    KeyHash    BLOB NOT NULL UNIQUE CHECK (length(KeyHash) = 32),
    CreatedAt  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    RevokedAt  TEXT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS AccessRules (
    RuleId       INTEGER PRIMARY KEY,
    TenantName   TEXT    NOT NULL REFERENCES Tenants (TenantName),
    Position     INTEGER NOT NULL,
    Effect       TEXT    NOT NULL CHECK (Effect IN ('allow', 'deny')),
    Operation    TEXT    NOT NULL,
    ModelPattern TEXT    NOT NULL,
    CreatedAt    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX IF NOT EXISTS IX_AccessRules_Tenant_Position ON AccessRules (TenantName, Position);
CREATE TABLE IF NOT EXISTS OperationRates (
    RatePlan          TEXT NOT NULL,
    Operation         TEXT NOT NULL,
    PerRequest        REAL NOT NULL DEFAULT 0 CHECK (PerRequest >= 0),
    Per1kInputTokens  REAL NOT NULL DEFAULT 0 CHECK (Per1kInputTokens >= 0),
    Per1kOutputTokens REAL NOT NULL DEFAULT 0 CHECK (Per1kOutputTokens >= 0),
    PerVector         REAL NOT NULL DEFAULT 0 CHECK (PerVector >= 0),
    PRIMARY KEY (RatePlan, Operation)
) STRICT;
INSERT OR IGNORE INTO OperationRates (RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector) VALUES
    ('standard', 'embed', 0, 0.1, 0, 0),
    ('standard', 'generate', 0, 0.5, 1.5, 0),
    ('standard', 'ensemble', 0, 0.5, 1.5, 0.001),
    ('standard', 'search', 0.01, 0.1, 0, 0.001),
    ('standard', 'aggregate', 0.01, 0, 0, 0.0001);
ALTER TABLE UsageLedger ADD COLUMN UsageKey TEXT NULL;
ALTER TABLE UsageLedger ADD COLUMN ModelName TEXT NOT NULL DEFAULT '';
ALTER TABLE UsageLedger ADD COLUMN Vectors INTEGER NOT NULL DEFAULT 0 CHECK (Vectors >= 0);
ALTER TABLE UsageLedger ADD COLUMN BillingUnits REAL NOT NULL DEFAULT 0;
ALTER TABLE UsageLedger ADD COLUMN StatusCode INTEGER NOT NULL DEFAULT 200;
CREATE UNIQUE INDEX IF NOT EXISTS UQ_UsageLedger_UsageKey ON UsageLedger (UsageKey) WHERE UsageKey IS NOT NULL;
CREATE INDEX IF NOT EXISTS IX_UsageLedger_RecordedAt ON UsageLedger (RecordedAt);";

// ---- models -------------------------------------------------------------------------------

/// The columns [`super::model_row`] reads, in its order.
macro_rules! model_columns {
    () => {
        "ModelId, Name, Version, Architecture, Format, TokenizerKind, WeightsRoot, SourceFileHash, \
         ParameterCount, TensorCount, AtomBytes, Status, CreatedAt, ParentModelId, DerivedBy"
    };
}

pub const SELECT_MODELS: &str = concat!("SELECT ", model_columns!(), " FROM Models ORDER BY Name, Version");

pub const SELECT_MODELS_BY_NAME: &str =
    concat!("SELECT ", model_columns!(), " FROM Models WHERE Name = ?1 ORDER BY Version");

pub const SELECT_MODEL_BY_NAME_VERSION: &str =
    concat!("SELECT ", model_columns!(), " FROM Models WHERE Name = ?1 AND Version = ?2");

pub const SELECT_MODEL_BY_ID: &str = concat!("SELECT ", model_columns!(), " FROM Models WHERE ModelId = ?1");

pub const INSERT_MODEL: &str = "INSERT INTO Models (Name, Version, Architecture, Format, TokenizerKind, \
     ParameterCount, TensorCount, Status, ConfigJson, TokenizerMaterial, ParentModelId, DerivedBy) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'ingesting', ?8, ?9, ?10, ?11)";

/// Completes a model: its weights root and file hash, the bytes of the distinct atoms it uses,
/// and `ready`.
pub const SEAL_MODEL: &str = "UPDATE Models SET WeightsRoot = ?2, SourceFileHash = ?3, Status = 'ready', AtomBytes = (
        SELECT COALESCE(SUM(a.ByteLength), 0) FROM TensorAtoms a WHERE a.AtomId IN (
            SELECT c.AtomId FROM ModelLayers l
            JOIN TensorAtomCoefficients c ON c.LayerId = l.LayerId
            WHERE l.ModelId = ?1))
    WHERE ModelId = ?1";

pub const DELETE_MODEL: &str = "DELETE FROM Models WHERE ModelId = ?1";

/// Before a model's row goes: its derived models keep working (they hold their own references)
/// and lose only the link; their DerivedBy still names it.
pub const DETACH_DERIVED_MODELS: &str = "UPDATE Models SET ParentModelId = NULL WHERE ParentModelId = ?1";

// ---- layers -------------------------------------------------------------------------------

pub const INSERT_LAYER: &str = "INSERT INTO ModelLayers (ModelId, Ordinal, TensorName, DType, Shape, \
     ParameterCount, ByteLength, TensorRoot, WeightsGeometry) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

pub const INSERT_COEFFICIENT: &str =
    "INSERT INTO TensorAtomCoefficients (LayerId, Ordinal, AtomId, Coefficient) VALUES (?1, ?2, ?3, 1.0)";

/// `length()` of a blob is read from the record header, without the blob's pages.
pub const SELECT_LAYERS_OF_MODEL: &str = "SELECT LayerId, Ordinal, TensorName, DType, Shape, ParameterCount, \
     ByteLength, TensorRoot, length(WeightsGeometry) IS NOT NULL \
     FROM ModelLayers WHERE ModelId = ?1 ORDER BY Ordinal";

/// Every atom reference of a model's layers, in layer then atom order.
pub const SELECT_COEFFICIENTS_OF_MODEL: &str = "SELECT c.LayerId, c.Ordinal, a.ContentHash, a.ByteLength, c.Coefficient \
     FROM ModelLayers l \
     JOIN TensorAtomCoefficients c ON c.LayerId = l.LayerId \
     JOIN TensorAtoms a ON a.AtomId = c.AtomId \
     WHERE l.ModelId = ?1 ORDER BY c.LayerId, c.Ordinal";

pub const SELECT_LAYER_ROOTS_OF_MODEL: &str = "SELECT TensorName, TensorRoot FROM ModelLayers WHERE ModelId = ?1";

pub const SELECT_MODEL_MATERIAL: &str = "SELECT ConfigJson, TokenizerKind, TokenizerMaterial FROM Models WHERE ModelId = ?1";

pub const SELECT_LAYER_GEOMETRY: &str = "SELECT WeightsGeometry FROM ModelLayers WHERE LayerId = ?1";

pub const SELECT_GEOMETRIES_OF_MODEL: &str = "SELECT TensorName, ParameterCount, WeightsGeometry \
     FROM ModelLayers WHERE ModelId = ?1 AND WeightsGeometry IS NOT NULL ORDER BY Ordinal";

// ---- tensor atoms -------------------------------------------------------------------------

pub const SELECT_ATOM_BY_HASH: &str = "SELECT AtomId, ByteLength FROM TensorAtoms WHERE ContentHash = ?1";

/// New atoms start unreferenced; `ADD_REFERENCES` counts the layers' uses in the same transaction.
pub const INSERT_ATOM: &str = "INSERT INTO TensorAtoms (ContentHash, Encoding, ByteLength, SpatialSignature, Payload) \
     VALUES (?1, ?2, ?3, ?4, ?5)";

pub const ADD_REFERENCES: &str = "UPDATE TensorAtoms SET ReferenceCount = ReferenceCount + ?2 WHERE AtomId = ?1";

/// The pager's hot path: one statement per batch of hashes (a JSON array of hex strings).
pub const FETCH_ATOMS: &str = "SELECT ContentHash, Encoding, Payload FROM TensorAtoms \
     WHERE ContentHash IN (SELECT unhex(value) FROM json_each(?1))";

pub const SELECT_REFERENCE_COUNTS: &str = "SELECT ContentHash, ReferenceCount FROM TensorAtoms \
     WHERE ContentHash IN (SELECT unhex(value) FROM json_each(?1))";

// ---- removing a model ---------------------------------------------------------------------

/// How many uses a model makes of each of its atoms.
macro_rules! model_uses {
    () => {
        "(SELECT c.AtomId, COUNT(*) AS Uses FROM ModelLayers l \
          JOIN TensorAtomCoefficients c ON c.LayerId = l.LayerId \
          WHERE l.ModelId = ?1 GROUP BY c.AtomId)"
    };
}

/// Atoms whose count is below the model's own uses of them: damage that removing would hide.
pub const COUNT_UNDERCOUNTED_ATOMS: &str = concat!(
    "SELECT COUNT(*) FROM ",
    model_uses!(),
    " AS r JOIN TensorAtoms a ON a.AtomId = r.AtomId WHERE a.ReferenceCount < r.Uses"
);

/// Takes one reference per use from each of a model's atoms and returns their new counts.
pub const RELEASE_MODEL_REFERENCES: &str = concat!(
    "UPDATE TensorAtoms SET ReferenceCount = TensorAtoms.ReferenceCount - r.Uses FROM ",
    model_uses!(),
    " AS r WHERE TensorAtoms.AtomId = r.AtomId RETURNING TensorAtoms.AtomId, TensorAtoms.ReferenceCount, TensorAtoms.ByteLength"
);

pub const DELETE_COEFFICIENTS_OF_MODEL: &str =
    "DELETE FROM TensorAtomCoefficients WHERE LayerId IN (SELECT LayerId FROM ModelLayers WHERE ModelId = ?1)";

pub const DELETE_LAYERS_OF_MODEL: &str = "DELETE FROM ModelLayers WHERE ModelId = ?1";

pub const DELETE_EMBEDDINGS_OF_MODEL: &str = "DELETE FROM AtomEmbeddings WHERE ModelId = ?1";

/// Deletes an atom only if nothing references it any more.
pub const DELETE_UNREFERENCED_ATOM: &str = "DELETE FROM TensorAtoms WHERE AtomId = ?1 AND ReferenceCount = 0";

// ---- verify -------------------------------------------------------------------------------

macro_rules! verify_atom_columns {
    () => {
        "SELECT a.ContentHash, a.Encoding, a.ByteLength, a.ReferenceCount, \
         (SELECT COUNT(*) FROM TensorAtomCoefficients c WHERE c.AtomId = a.AtomId), a.AtomId, a.Payload \
         FROM TensorAtoms a"
    };
}

/// Every atom with its payload and the number of coefficient rows naming it.
pub const VERIFY_ATOMS: &str = concat!(verify_atom_columns!(), " ORDER BY a.AtomId");

/// The same for the atoms one model uses.
pub const VERIFY_ATOMS_OF_MODEL: &str = concat!(
    verify_atom_columns!(),
    " WHERE a.AtomId IN (SELECT c.AtomId FROM ModelLayers l \
      JOIN TensorAtomCoefficients c ON c.LayerId = l.LayerId WHERE l.ModelId = ?1) ORDER BY a.AtomId"
);

/// Where an atom is used, for reporting damage.
pub const SELECT_ATOM_USES: &str = "SELECT m.Name || ':' || m.Version, l.TensorName, c.Ordinal \
     FROM TensorAtomCoefficients c \
     JOIN ModelLayers l ON l.LayerId = c.LayerId \
     JOIN Models m ON m.ModelId = l.ModelId \
     WHERE c.AtomId = ?1 ORDER BY 1, 2, 3";

/// Rows whose foreign key points nowhere (possible only if a tool wrote with the keys off).
pub const FOREIGN_KEY_CHECK: &str = "PRAGMA foreign_key_check";

// ---- content atoms and embeddings ---------------------------------------------------------

/// Stores a content atom or adds a reference to the stored one.
pub const UPSERT_CONTENT_ATOM: &str = "INSERT INTO Atoms (ContentHash, Modality, Subtype, ReferenceCount, CanonicalText, Payload) \
     VALUES (?1, ?2, ?3, 1, ?4, ?5) \
     ON CONFLICT (ContentHash) DO UPDATE SET ReferenceCount = ReferenceCount + 1 \
     RETURNING AtomId";

/// The id a new or replaced embedding gets: above every existing one, taken before a replaced
/// row is deleted, so that a replaced vector always shows as a new id (the search index's
/// refresh relies on it; AUTOINCREMENT would need a table rebuild of existing stores).
pub const NEXT_EMBEDDING_ID: &str = "SELECT COALESCE(MAX(EmbeddingId), 0) + 1 FROM AtomEmbeddings";

/// Removes an atom's embedding by a model when its vector differs from ?3 (then re-inserted).
pub const DELETE_CHANGED_EMBEDDING: &str =
    "DELETE FROM AtomEmbeddings WHERE AtomId = ?1 AND ModelId = ?2 AND EmbeddingVector IS NOT ?3";

/// Writing the same embedding again (a retry, or the same text embedded again) changes nothing.
pub const INSERT_EMBEDDING: &str = "INSERT INTO AtomEmbeddings (EmbeddingId, AtomId, ModelId, Dimension, SpatialCoarse, EmbeddingVector) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (AtomId, ModelId) DO NOTHING";

pub const EMBEDDING_WATERMARK: &str = "SELECT COUNT(*), COALESCE(MAX(EmbeddingId), 0) FROM AtomEmbeddings WHERE ModelId = ?1";

pub const SELECT_EMBEDDINGS_AFTER: &str = "SELECT e.EmbeddingId, e.AtomId, a.Modality, e.EmbeddingVector \
     FROM AtomEmbeddings e JOIN Atoms a ON a.AtomId = e.AtomId \
     WHERE e.ModelId = ?1 AND e.EmbeddingId > ?2 ORDER BY e.EmbeddingId LIMIT ?3";

pub const SELECT_EMBEDDING_OF_ATOM: &str = "SELECT EmbeddingVector FROM AtomEmbeddings WHERE AtomId = ?1 AND ModelId = ?2";

pub const SELECT_CONTENT_ATOM: &str =
    "SELECT AtomId, ContentHash, Modality, Subtype, CanonicalText, length(Payload) FROM Atoms WHERE AtomId = ?1";

pub const SELECT_EMBEDDINGS_OF_MODEL: &str = "SELECT e.AtomId, a.ContentHash, e.Dimension, e.EmbeddingVector \
     FROM AtomEmbeddings e JOIN Atoms a ON a.AtomId = e.AtomId WHERE e.ModelId = ?1";

// ---- lineage ------------------------------------------------------------------------------

/// A retried request (same key) keeps its first row.
pub const INSERT_REQUEST: &str = "INSERT INTO InferenceRequests (RequestKey, Tenant, Operation, ModelNames, Status) \
     VALUES (?1, ?2, ?3, ?4, 'running') ON CONFLICT (RequestKey) DO NOTHING";

pub const SELECT_REQUEST_ID_BY_KEY: &str = "SELECT RequestId FROM InferenceRequests WHERE RequestKey = ?1";

pub const SELECT_REQUEST: &str = "SELECT RequestKey, Tenant, Operation, ModelNames, Status, DurationMs, ErrorMessage \
     FROM InferenceRequests WHERE RequestId = ?1";

pub const COMPLETE_REQUEST: &str = "UPDATE InferenceRequests SET Status = ?2, DurationMs = ?3, ErrorMessage = ?4, \
     CompletedAt = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE RequestId = ?1";

/// A retried step (same request and ordinal) is not recorded twice.
pub const INSERT_STEP: &str = "INSERT INTO InferenceSteps (RequestId, Ordinal, Operation, ModelId, WeightsRoot, \
     ParametersJson, Status, DurationMs, Tenant) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (RequestId, Ordinal) DO NOTHING";

pub const SELECT_STEPS_OF_REQUEST: &str = "SELECT Ordinal, Operation, ModelId, WeightsRoot, ParametersJson, Status, \
     DurationMs, Tenant FROM InferenceSteps WHERE RequestId = ?1 ORDER BY Ordinal";

/// A retried write of the same row (same UsageKey) changes nothing.
pub const INSERT_USAGE: &str = "INSERT INTO UsageLedger (Tenant, RequestId, Operation, ModelId, InputTokens, \
     OutputTokens, ComputeMs, UsageKey, ModelName, Vectors, BillingUnits, StatusCode) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (UsageKey) WHERE UsageKey IS NOT NULL DO NOTHING";

pub const SELECT_USAGE_OF_REQUEST: &str = "SELECT Tenant, Operation, ModelId, InputTokens, OutputTokens, ComputeMs, \
     ModelName, Vectors, BillingUnits, StatusCode FROM UsageLedger WHERE RequestId = ?1 ORDER BY UsageId";

// ---- governance ---------------------------------------------------------------------------

pub const SELECT_TENANTS: &str =
    "SELECT TenantName, RatePlan, RequestsPerMinute, TokensPerMinute FROM Tenants ORDER BY TenantName";

pub const SELECT_API_KEYS: &str =
    "SELECT KeyId, TenantName, Label, KeyHash, CreatedAt, RevokedAt FROM ApiKeys ORDER BY TenantName, CreatedAt, KeyId";

pub const SELECT_ACCESS_RULES: &str = "SELECT RuleId, TenantName, Position, Effect, Operation, ModelPattern \
     FROM AccessRules ORDER BY TenantName, Position, RuleId";

pub const SELECT_RATES: &str = "SELECT RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector \
     FROM OperationRates ORDER BY RatePlan, Operation";

/// A tenant named by a new key or rule, with the default plan and no limits.
pub const ENSURE_TENANT: &str = "INSERT INTO Tenants (TenantName) VALUES (?1) ON CONFLICT (TenantName) DO NOTHING";

pub const UPSERT_TENANT: &str = "INSERT INTO Tenants (TenantName, RatePlan, RequestsPerMinute, TokensPerMinute) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (TenantName) DO UPDATE SET RatePlan = excluded.RatePlan, \
     RequestsPerMinute = excluded.RequestsPerMinute, TokensPerMinute = excluded.TokensPerMinute";

pub const API_KEY_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM ApiKeys WHERE KeyId = ?1 OR KeyHash = ?2)";

pub const INSERT_API_KEY: &str = "INSERT INTO ApiKeys (KeyId, TenantName, Label, KeyHash) VALUES (?1, ?2, ?3, ?4)";

pub const REVOKE_API_KEY: &str = "UPDATE ApiKeys SET RevokedAt = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
     WHERE KeyId = ?1 AND RevokedAt IS NULL";

pub const INSERT_ACCESS_RULE: &str = "INSERT INTO AccessRules (TenantName, Position, Effect, Operation, ModelPattern) \
     VALUES (?1, (SELECT COALESCE(MAX(Position), 0) + 1 FROM AccessRules WHERE TenantName = ?1), ?2, ?3, ?4) \
     RETURNING RuleId";

pub const DELETE_ACCESS_RULE: &str = "DELETE FROM AccessRules WHERE RuleId = ?1";

pub const UPSERT_RATE: &str = "INSERT INTO OperationRates (RatePlan, Operation, PerRequest, Per1kInputTokens, \
     Per1kOutputTokens, PerVector) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (RatePlan, Operation) DO UPDATE SET \
     PerRequest = excluded.PerRequest, Per1kInputTokens = excluded.Per1kInputTokens, \
     Per1kOutputTokens = excluded.Per1kOutputTokens, PerVector = excluded.PerVector";

/// Ledger rows newest first; ?1 tenant (NULL = all), ?2 since (NULL = all time), ?3 at most.
pub const SELECT_USAGE: &str = "SELECT u.UsageId, u.Tenant, r.RequestKey, u.Operation, u.ModelName, u.InputTokens, \
     u.OutputTokens, u.Vectors, u.ComputeMs, u.BillingUnits, u.StatusCode, u.RecordedAt \
     FROM UsageLedger AS u LEFT JOIN InferenceRequests AS r ON r.RequestId = u.RequestId \
     WHERE (?1 IS NULL OR u.Tenant = ?1) AND (?2 IS NULL OR u.RecordedAt >= ?2) \
     ORDER BY u.UsageId DESC LIMIT ?3";

/// Whether the row a graph node stands for exists (nodes refer to one of three tables).
pub const GRAPH_NODE_TARGET_EXISTS: &str = "SELECT CASE ?1 \
     WHEN 'atom' THEN EXISTS (SELECT 1 FROM Atoms WHERE AtomId = ?2) \
     WHEN 'model' THEN EXISTS (SELECT 1 FROM Models WHERE ModelId = ?2) \
     WHEN 'request' THEN EXISTS (SELECT 1 FROM InferenceRequests WHERE RequestId = ?2) \
     ELSE 0 END";

/// A node keeps the content hash of what it stands for (an atom's hash, a model's weights
/// root), so lineage survives the row's removal. The no-op update makes RETURNING give the id
/// of an existing node.
pub const UPSERT_GRAPH_NODE: &str = "INSERT INTO AtomGraphNodes (NodeKind, RefId, ContentHash) VALUES (?1, ?2, CASE ?1 \
     WHEN 'atom' THEN (SELECT ContentHash FROM Atoms WHERE AtomId = ?2) \
     WHEN 'model' THEN (SELECT WeightsRoot FROM Models WHERE ModelId = ?2) END) \
     ON CONFLICT (NodeKind, RefId) DO UPDATE SET RefId = excluded.RefId RETURNING NodeId";

pub const INSERT_EDGE: &str = "INSERT INTO AtomGraphEdges (FromNode, ToNode, RelationType, Weight, RequestId) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (FromNode, ToNode, RelationType) DO NOTHING";

pub const SELECT_EDGES_OF_REQUEST: &str = "SELECT f.NodeKind, f.RefId, t.NodeKind, t.RefId, e.RelationType, e.Weight \
     FROM AtomGraphEdges e \
     JOIN AtomGraphNodes f ON f.NodeId = e.FromNode \
     JOIN AtomGraphNodes t ON t.NodeId = e.ToNode \
     WHERE e.RequestId = ?1 ORDER BY e.EdgeId";
