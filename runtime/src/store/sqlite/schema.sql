-- The embedded store's schema, version 2. Same tables and column names as the SQL Server 2025
-- schema in sql/, with SQLite's types: geometry as ISO WKB blobs (what SQL Server's AsBinaryZM()
-- returns), vectors as little-endian f32 blobs beside their dimension, hashes as 32-byte blobs,
-- times as ISO 8601 UTC text. Every statement is idempotent; runtime/src/store/sqlite.rs runs
-- this file in one transaction and records the version in SchemaVersion.
--
-- Column order differs from SQL Server where it matters to SQLite: a row is stored as one
-- record, and reading a column after a large blob walks the blob's overflow pages, so the big
-- columns (Payload, EmbeddingVector, ConfigJson, TokenizerMaterial, WeightsGeometry) come last
-- (https://www.sqlite.org/fileformat2.html#record_format).
--
-- Foreign keys (enforced: the store turns PRAGMA foreign_keys on) do not cascade into the
-- weights: deleting a model with layers, or an atom with references, fails, so reference counts
-- can only change through the store's own statements. Lineage keeps its rows when a model is
-- removed (ModelId set to NULL; the step keeps the exact WeightsRoot it ran).
--
-- A store of version 1 is upgraded by the migrations in sqlite/statements.rs (MIGRATE_TO_2 adds
-- the lineage columns of Models, which then sit after TokenizerMaterial: reading them walks the
-- tokenizer's overflow pages, a cost paid by `models` only, once per model row).

CREATE TABLE IF NOT EXISTS Models (
    ModelId           INTEGER PRIMARY KEY,
    Name              TEXT    NOT NULL,
    Version           TEXT    NOT NULL,
    Architecture      TEXT    NOT NULL,
    Format            TEXT    NOT NULL,
    TokenizerKind     TEXT    NOT NULL,
    WeightsRoot       BLOB    NULL CHECK (WeightsRoot IS NULL OR length(WeightsRoot) = 32),
    SourceFileHash    BLOB    NULL CHECK (SourceFileHash IS NULL OR length(SourceFileHash) = 32),
    ParameterCount    INTEGER NOT NULL CHECK (ParameterCount >= 0),
    TensorCount       INTEGER NOT NULL CHECK (TensorCount >= 0),
    AtomBytes         INTEGER NOT NULL DEFAULT 0 CHECK (AtomBytes >= 0),
    Status            TEXT    NOT NULL CHECK (Status IN ('ingesting', 'ready')),
    CreatedAt         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- A derived model (`hartonomous student`) names the model whose atoms it reuses, and says how
    -- it was made. The store sets ParentModelId to NULL when the parent is removed (explicitly,
    -- as SQL Server forbids ON DELETE SET NULL on a self-reference); DerivedBy keeps the
    -- parent's name and weights root. SourceFileHash of a derived model hashes its derivation.
    ParentModelId     INTEGER NULL REFERENCES Models (ModelId),
    DerivedBy         TEXT    NULL,
    ConfigJson        TEXT    NOT NULL,
    TokenizerMaterial TEXT    NULL,
    CONSTRAINT UQ_Models_Name_Version UNIQUE (Name, Version),
    -- Both hashes are known only once the file has been read: they arrive with Status 'ready'.
    CONSTRAINT CK_Models_ReadyHasHashes CHECK (Status <> 'ready' OR (WeightsRoot IS NOT NULL AND SourceFileHash IS NOT NULL))
) STRICT;

-- Removing a model detaches its children (derived models) by this index.
CREATE INDEX IF NOT EXISTS IX_Models_ParentModelId ON Models (ParentModelId);

CREATE TABLE IF NOT EXISTS ModelLayers (
    LayerId         INTEGER PRIMARY KEY,
    ModelId         INTEGER NOT NULL REFERENCES Models (ModelId),
    Ordinal         INTEGER NOT NULL CHECK (Ordinal >= 0),
    TensorName      TEXT    NOT NULL,
    DType           TEXT    NOT NULL,
    Shape           TEXT    NOT NULL,                 -- JSON array, outermost dimension first
    ParameterCount  INTEGER NOT NULL CHECK (ParameterCount >= 0),
    ByteLength      INTEGER NOT NULL CHECK (ByteLength >= 0),
    TensorRoot      BLOB    NOT NULL CHECK (length(TensorRoot) = 32),
    WeightsGeometry BLOB    NULL,                     -- WKB LINESTRING ZM (type 3002)
    -- Both unique keys lead with ModelId: they are the "layers by model" index.
    CONSTRAINT UQ_ModelLayers_Model_Tensor UNIQUE (ModelId, TensorName),
    CONSTRAINT UQ_ModelLayers_Model_Ordinal UNIQUE (ModelId, Ordinal)
) STRICT;

CREATE TABLE IF NOT EXISTS TensorAtoms (
    AtomId           INTEGER PRIMARY KEY,
    ContentHash      BLOB    NOT NULL CHECK (length(ContentHash) = 32),
    Encoding         TEXT    NOT NULL,                -- dtype tag hashed into the id: F32, Q4_1, ...
    ByteLength       INTEGER NOT NULL CHECK (ByteLength > 0),
    ReferenceCount   INTEGER NOT NULL DEFAULT 0 CHECK (ReferenceCount >= 0),
    SpatialSignature BLOB    NULL,                    -- WKB POINT Z (mean, std, max |w|), type 1001
    CreatedAt        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    Payload          BLOB    NOT NULL,
    CONSTRAINT UQ_TensorAtoms_ContentHash UNIQUE (ContentHash)
) STRICT;

-- A layer chunk is the coefficient-weighted sum of its atoms: 1.0 for plain storage.
CREATE TABLE IF NOT EXISTS TensorAtomCoefficients (
    LayerId     INTEGER NOT NULL REFERENCES ModelLayers (LayerId),
    Ordinal     INTEGER NOT NULL CHECK (Ordinal >= 0),
    AtomId      INTEGER NOT NULL REFERENCES TensorAtoms (AtomId),
    Coefficient REAL    NOT NULL DEFAULT 1.0,
    PRIMARY KEY (LayerId, Ordinal)
) STRICT, WITHOUT ROWID;

-- rm and verify count an atom's references; the foreign key check on deleting an atom needs it too.
CREATE INDEX IF NOT EXISTS IX_TensorAtomCoefficients_AtomId ON TensorAtomCoefficients (AtomId);

-- Content atoms: the inputs and outputs of inference.
CREATE TABLE IF NOT EXISTS Atoms (
    AtomId         INTEGER PRIMARY KEY,
    ContentHash    BLOB    NOT NULL CHECK (length(ContentHash) = 32),
    Modality       TEXT    NOT NULL,
    Subtype        TEXT    NULL,
    ReferenceCount INTEGER NOT NULL DEFAULT 0 CHECK (ReferenceCount >= 0),
    CreatedAt      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CanonicalText  TEXT    NULL,
    Payload        BLOB    NULL,
    CONSTRAINT UQ_Atoms_ContentHash UNIQUE (ContentHash)
) STRICT;

CREATE TABLE IF NOT EXISTS AtomEmbeddings (
    EmbeddingId     INTEGER PRIMARY KEY,
    AtomId          INTEGER NOT NULL REFERENCES Atoms (AtomId),
    ModelId         INTEGER NOT NULL REFERENCES Models (ModelId),
    Dimension       INTEGER NOT NULL CHECK (Dimension BETWEEN 1 AND 1998),
    SpatialCoarse   BLOB    NULL,                     -- WKB POINT Z of the first three components
    CreatedAt       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    EmbeddingVector BLOB    NOT NULL,                 -- little-endian f32 x Dimension, unpadded
    CONSTRAINT UQ_AtomEmbeddings_Atom_Model UNIQUE (AtomId, ModelId),
    CONSTRAINT CK_AtomEmbeddings_Length CHECK (length(EmbeddingVector) = 4 * Dimension)
) STRICT;

CREATE INDEX IF NOT EXISTS IX_AtomEmbeddings_ModelId ON AtomEmbeddings (ModelId);

CREATE TABLE IF NOT EXISTS InferenceRequests (
    RequestId    INTEGER PRIMARY KEY,
    RequestKey   TEXT    NOT NULL,
    Tenant       TEXT    NOT NULL,
    Operation    TEXT    NOT NULL,
    ModelNames   TEXT    NOT NULL,                    -- JSON array of model names
    Status       TEXT    NOT NULL CHECK (Status IN ('running', 'succeeded', 'failed')),
    RequestedAt  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CompletedAt  TEXT    NULL,
    DurationMs   REAL    NULL,
    ErrorMessage TEXT    NULL,
    CONSTRAINT UQ_InferenceRequests_RequestKey UNIQUE (RequestKey)
) STRICT;

CREATE TABLE IF NOT EXISTS InferenceSteps (
    StepId         INTEGER PRIMARY KEY,
    RequestId      INTEGER NOT NULL REFERENCES InferenceRequests (RequestId),
    Ordinal        INTEGER NOT NULL CHECK (Ordinal >= 0),
    Operation      TEXT    NOT NULL,
    ModelId        INTEGER NULL REFERENCES Models (ModelId) ON DELETE SET NULL,
    WeightsRoot    BLOB    NULL CHECK (WeightsRoot IS NULL OR length(WeightsRoot) = 32),
    ParametersJson TEXT    NOT NULL DEFAULT '{}',
    Status         TEXT    NOT NULL CHECK (Status IN ('running', 'succeeded', 'failed')),
    StartedAt      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    DurationMs     REAL    NULL,
    Tenant         TEXT    NOT NULL,
    CONSTRAINT UQ_InferenceSteps_Request_Ordinal UNIQUE (RequestId, Ordinal)
) STRICT;

CREATE INDEX IF NOT EXISTS IX_InferenceSteps_ModelId ON InferenceSteps (ModelId);

-- The lineage graph (NODE and EDGE tables on SQL Server). NodeKind says which table RefId is a
-- row of: 'atom' (Atoms), 'model' (Models), 'request' (InferenceRequests).
CREATE TABLE IF NOT EXISTS AtomGraphNodes (
    NodeId      INTEGER PRIMARY KEY,
    NodeKind    TEXT    NOT NULL CHECK (NodeKind IN ('atom', 'model', 'request')),
    RefId       INTEGER NOT NULL,
    ContentHash BLOB    NULL CHECK (ContentHash IS NULL OR length(ContentHash) = 32),
    CONSTRAINT UQ_AtomGraphNodes_Kind_Ref UNIQUE (NodeKind, RefId)
) STRICT;

CREATE TABLE IF NOT EXISTS AtomGraphEdges (
    EdgeId       INTEGER PRIMARY KEY,
    FromNode     INTEGER NOT NULL REFERENCES AtomGraphNodes (NodeId),
    ToNode       INTEGER NOT NULL REFERENCES AtomGraphNodes (NodeId),
    RelationType TEXT    NOT NULL,
    Weight       REAL    NOT NULL DEFAULT 1.0,
    RequestId    INTEGER NULL REFERENCES InferenceRequests (RequestId),
    CONSTRAINT UQ_AtomGraphEdges_From_To_Relation UNIQUE (FromNode, ToNode, RelationType)
) STRICT;

CREATE INDEX IF NOT EXISTS IX_AtomGraphEdges_ToNode ON AtomGraphEdges (ToNode);
CREATE INDEX IF NOT EXISTS IX_AtomGraphEdges_RequestId ON AtomGraphEdges (RequestId);

CREATE TABLE IF NOT EXISTS UsageLedger (
    UsageId      INTEGER PRIMARY KEY,
    Tenant       TEXT    NOT NULL,
    RequestId    INTEGER NULL REFERENCES InferenceRequests (RequestId),
    Operation    TEXT    NOT NULL,
    ModelId      INTEGER NULL REFERENCES Models (ModelId) ON DELETE SET NULL,
    InputTokens  INTEGER NOT NULL DEFAULT 0 CHECK (InputTokens >= 0),
    OutputTokens INTEGER NOT NULL DEFAULT 0 CHECK (OutputTokens >= 0),
    ComputeMs    REAL    NOT NULL DEFAULT 0,
    RecordedAt   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX IF NOT EXISTS IX_UsageLedger_Tenant_RecordedAt ON UsageLedger (Tenant, RecordedAt);
CREATE INDEX IF NOT EXISTS IX_UsageLedger_RequestId ON UsageLedger (RequestId);
-- Removing a model sets ModelId to NULL here; without an index that is a scan of the ledger.
CREATE INDEX IF NOT EXISTS IX_UsageLedger_ModelId ON UsageLedger (ModelId);
