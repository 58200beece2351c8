-- Hartonomous schema, version 1: the model store.
--
-- Models cut into content-addressed tensor atoms (dbo.Models, dbo.ModelLayers, dbo.TensorAtoms,
-- dbo.TensorAtomCoefficients), and content atoms with their embeddings (dbo.Atoms,
-- dbo.AtomEmbeddings). The hashes stored here are defined byte for byte in loader/src/atom.rs and
-- ARCHITECTURE.md, "Content addressing"; T-SQL can recompute an atom id with HASHBYTES (see
-- verify_tensor_atom_hashes in sql/queries/store.sql).
--
-- Idempotent: every batch is guarded twice, by "version 1 not yet recorded" and by "this object
-- does not exist yet". Re-running the script after it completed does nothing; re-running it after
-- it died half way creates only what is missing. dbo.SchemaVersion gets its row last, so a
-- half-applied schema reads as "version 1 absent" and the daemon refuses it with that cause.
--
-- Batches are separated by lines holding only GO (sqlcmd's separator; the daemon splits on the
-- same lines). Requires SQL Server 2025 (17.x) for the VECTOR type.

-- The options that spatial indexes need when they are created and whenever a row of their table
-- changes (the same set as for indexed views). sqlcmd starts with QUOTED_IDENTIFIER OFF unless
-- given -I, so they are set here rather than trusted to the client.
SET ANSI_NULLS ON;
SET ANSI_PADDING ON;
SET ANSI_WARNINGS ON;
SET ARITHABORT ON;
SET CONCAT_NULL_YIELDS_NULL ON;
SET QUOTED_IDENTIFIER ON;
SET NUMERIC_ROUNDABORT OFF;
SET XACT_ABORT ON;
GO

-- Two installers (two daemons starting at once) would otherwise race between a guard and its
-- CREATE. The lock belongs to the session: it is released at the end of this script, or when the
-- connection closes if the script fails half way (sqlcmd -b exits; the daemon drops the
-- connection on a failed batch).
DECLARE @lock INT;
EXEC @lock = sys.sp_getapplock
    @Resource = N'hartonomous-schema',
    @LockMode = N'Exclusive',
    @LockOwner = N'Session',
    @LockTimeout = 60000;
IF @lock < 0
    THROW 50000, N'could not lock the Hartonomous schema within 60 s: another installer is running', 1;
GO

-- Readers must not wait for an open writer: an ingest is one transaction that can run for
-- minutes, and `hartonomous models`, the pager and verify read beside it (the store contract test
-- uncommitted_writes_are_invisible). Under READ_COMMITTED_SNAPSHOT, READ COMMITTED reads see the
-- last committed row versions instead of blocking on the writer's locks; UPDLOCK/HOLDLOCK hints
-- in sql/queries/store.sql still lock, so writers stay serialized where they must. The daemon
-- refuses a database with it off (database_options). NO_WAIT: the ALTER needs the database to
-- itself, and fails at once, rather than waiting or rolling other sessions back, when anything
-- else is connected; run the script again when nothing is. Outside the version guard on purpose:
-- a database restored or copied with the option off gets it back by re-running the script.
IF EXISTS (
    SELECT 1 FROM sys.databases WHERE database_id = DB_ID() AND is_read_committed_snapshot_on = 0
)
    ALTER DATABASE CURRENT SET READ_COMMITTED_SNAPSHOT ON WITH NO_WAIT;
GO

-- One row per applied version. The daemon reads MAX(Version) (database_options in
-- sql/queries/store.sql) and refuses a database whose version differs from its own.
IF OBJECT_ID(N'dbo.SchemaVersion', N'U') IS NULL
    CREATE TABLE dbo.SchemaVersion (
        Version INT NOT NULL CONSTRAINT PK_SchemaVersion PRIMARY KEY CLUSTERED,
        Description NVARCHAR(200) NOT NULL,
        AppliedAt DATETIME2(7) NOT NULL
            CONSTRAINT DF_SchemaVersion_AppliedAt DEFAULT (SYSUTCDATETIME())
    );
GO

-- A stored model. Rows are written with Status 'ingesting' and flipped to 'ready' by the last
-- statement of an ingest, so a model is visible (find_models, for the daemon) only once all its
-- layers and atoms are in. WeightsRoot is the model's fingerprint (SHA-256 over its sorted tensor
-- names and tensor roots); SourceFileHash is the SHA-256 of the file it was ingested from. Both
-- are known only once the whole file has been read, so they are NULL while the row is 'ingesting'
-- and set by mark_model_ready with the flip to 'ready' (CK_Models_Sealed). AtomBytes is the bytes
-- of the distinct atoms the model references (what storing it alone would cost), computed by
-- mark_model_ready. TokenizerMaterial is JSON text (tokenizer.json, or GGUF's tokenizer.* keys).
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.Models', N'U') IS NULL
    CREATE TABLE dbo.Models (
        ModelId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_Models PRIMARY KEY CLUSTERED,
        Name NVARCHAR(200) NOT NULL,
        Version NVARCHAR(100) NOT NULL,
        Architecture NVARCHAR(100) NOT NULL,
        Format NVARCHAR(32) NOT NULL,
        ConfigJson NVARCHAR(MAX) NULL
            CONSTRAINT CK_Models_ConfigJson CHECK (ConfigJson IS NULL OR ISJSON(ConfigJson) = 1),
        TokenizerKind NVARCHAR(32) NOT NULL,
        TokenizerMaterial NVARCHAR(MAX) NULL,
        WeightsRoot BINARY(32) NULL,
        SourceFileHash BINARY(32) NULL,
        ParameterCount BIGINT NOT NULL CONSTRAINT CK_Models_ParameterCount CHECK (ParameterCount >= 0),
        TensorCount INT NOT NULL CONSTRAINT CK_Models_TensorCount CHECK (TensorCount >= 0),
        AtomBytes BIGINT NOT NULL
            CONSTRAINT DF_Models_AtomBytes DEFAULT (0)
            CONSTRAINT CK_Models_AtomBytes CHECK (AtomBytes >= 0),
        Status NVARCHAR(16) NOT NULL
            CONSTRAINT DF_Models_Status DEFAULT (N'ingesting')
            CONSTRAINT CK_Models_Status CHECK (Status IN (N'ingesting', N'ready')),
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_Models_CreatedAt DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT UQ_Models_Name_Version UNIQUE (Name, Version),
        CONSTRAINT CK_Models_Sealed CHECK (
            Status <> N'ready' OR (WeightsRoot IS NOT NULL AND SourceFileHash IS NOT NULL)
        ),
        -- "Is this model already stored under another name?" and lineage look-ups by fingerprint.
        INDEX IX_Models_WeightsRoot NONCLUSTERED (WeightsRoot)
    );
GO

-- One tensor of a model. Shape is JSON array text ([1536,384]); TensorRoot is name-free, so two
-- models sharing a tensor share its root (the pager keys GPU buffers by it).
--
-- WeightsGeometry is a LINESTRING ZM (ARCHITECTURE.md, "Layer geometry": X element index, Y value,
-- Z importance, M model version stamp), NULL for tensors over the geometry size limit. It is a CLR
-- UDT, which tiberius cannot read (it panics on geometry columns, tiberius issue 257; FACTS.md,
-- "Geometry"): the daemon never selects the column itself, only WeightsGeometry.AsBinaryZM(), a
-- VARBINARY(MAX) of ISO WKB with Z and M kept (type 3002), the very bytes loader/src/geometry.rs
-- writes. The CHECK rejects a value that lost its Z or M on the way in (see
-- write_layer_geometry_wkb in sql/queries/store.sql): better an error than a flat line.
--
-- UQ_ModelLayers_Model_TensorName has a 1,032-byte key (NVARCHAR(512) is 1,024 bytes): within the
-- 1,700-byte limit of a nonclustered index key. UQ_ModelLayers_Model_Ordinal is the "layers of a
-- model, in order" index.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.ModelLayers', N'U') IS NULL
    CREATE TABLE dbo.ModelLayers (
        LayerId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_ModelLayers PRIMARY KEY CLUSTERED,
        ModelId BIGINT NOT NULL
            CONSTRAINT FK_ModelLayers_Models REFERENCES dbo.Models (ModelId),
        Ordinal INT NOT NULL CONSTRAINT CK_ModelLayers_Ordinal CHECK (Ordinal >= 0),
        TensorName NVARCHAR(512) NOT NULL,
        DType NVARCHAR(16) NOT NULL,
        Shape NVARCHAR(200) NOT NULL
            CONSTRAINT CK_ModelLayers_Shape CHECK (ISJSON(Shape) = 1 AND LEFT(Shape, 1) = N'['),
        ParameterCount BIGINT NOT NULL CONSTRAINT CK_ModelLayers_ParameterCount CHECK (ParameterCount >= 0),
        ByteLength BIGINT NOT NULL CONSTRAINT CK_ModelLayers_ByteLength CHECK (ByteLength >= 0),
        TensorRoot BINARY(32) NOT NULL,
        WeightsGeometry GEOMETRY NULL
            CONSTRAINT CK_ModelLayers_WeightsGeometry CHECK (
                WeightsGeometry IS NULL
                OR (WeightsGeometry.STGeometryType() = N'LineString'
                    AND WeightsGeometry.HasZ = 1
                    AND WeightsGeometry.HasM = 1)
            ),
        CONSTRAINT UQ_ModelLayers_Model_TensorName UNIQUE (ModelId, TensorName),
        CONSTRAINT UQ_ModelLayers_Model_Ordinal UNIQUE (ModelId, Ordinal),
        -- Layers by tensor root: identical tensors across models (frozen layers, students).
        INDEX IX_ModelLayers_TensorRoot NONCLUSTERED (TensorRoot)
    );
GO

-- A tensor atom: a fixed-size cut of a tensor's stored bytes, addressed by
-- ContentHash = SHA-256(Encoding tag || 0x00 || Payload). Stored once however many tensors and
-- models use it; ReferenceCount is the number of dbo.TensorAtomCoefficients rows that point at it
-- (an atom used twice in one tensor counts twice), kept exact by the ingest, rm and checked by
-- verify_reference_counts. An atom whose count reaches 0 is deleted in the same transaction.
--
-- The UNIQUE constraint on ContentHash is the "atoms by hash" index of the pager's hot path. The
-- clustered key stays AtomId: spatial indexes require a clustered primary key (CREATE SPATIAL
-- INDEX docs), and an ever-increasing key keeps inserts at the end of the table. Payloads of 64 KiB
-- live off-row (VARBINARY(MAX) over 8,000 bytes), so the row itself is small.
--
-- SpatialSignature is a POINT Z: X = mean, Y = population standard deviation, Z = max |w| of the
-- atom's dequantized values (loader/src/atom.rs, SpatialSignature); NULL for dtypes the loader
-- cannot dequantize. The spatial index below uses X and Y; Z rides along.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.TensorAtoms', N'U') IS NULL
    CREATE TABLE dbo.TensorAtoms (
        AtomId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_TensorAtoms PRIMARY KEY CLUSTERED,
        ContentHash BINARY(32) NOT NULL CONSTRAINT UQ_TensorAtoms_ContentHash UNIQUE,
        Encoding NVARCHAR(16) NOT NULL,
        ByteLength INT NOT NULL CONSTRAINT CK_TensorAtoms_ByteLength CHECK (ByteLength >= 0),
        Payload VARBINARY(MAX) NOT NULL,
        ReferenceCount BIGINT NOT NULL
            CONSTRAINT DF_TensorAtoms_ReferenceCount DEFAULT (0)
            CONSTRAINT CK_TensorAtoms_ReferenceCount CHECK (ReferenceCount >= 0),
        SpatialSignature GEOMETRY NULL
            CONSTRAINT CK_TensorAtoms_SpatialSignature CHECK (
                SpatialSignature IS NULL
                OR (SpatialSignature.STGeometryType() = N'Point' AND SpatialSignature.HasZ = 1)
            ),
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_TensorAtoms_CreatedAt DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT CK_TensorAtoms_PayloadLength CHECK (DATALENGTH(Payload) = ByteLength)
    );
GO

-- A tensor as a list of atoms: chunk Ordinal of layer LayerId is Coefficient * atom AtomId.
-- Coefficient is 1.0 for plain storage; other values are for merged and student models later.
-- The primary key is the "coefficients of a layer, in order" index; IX_..._Atom serves the
-- reference-count check and rm (which atoms does this model release?).
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.TensorAtomCoefficients', N'U') IS NULL
    CREATE TABLE dbo.TensorAtomCoefficients (
        LayerId BIGINT NOT NULL
            CONSTRAINT FK_TensorAtomCoefficients_ModelLayers REFERENCES dbo.ModelLayers (LayerId),
        Ordinal INT NOT NULL CONSTRAINT CK_TensorAtomCoefficients_Ordinal CHECK (Ordinal >= 0),
        AtomId BIGINT NOT NULL
            CONSTRAINT FK_TensorAtomCoefficients_TensorAtoms REFERENCES dbo.TensorAtoms (AtomId),
        Coefficient FLOAT NOT NULL CONSTRAINT DF_TensorAtomCoefficients_Coefficient DEFAULT (1.0),
        CONSTRAINT PK_TensorAtomCoefficients PRIMARY KEY CLUSTERED (LayerId, Ordinal),
        INDEX IX_TensorAtomCoefficients_Atom NONCLUSTERED (AtomId)
    );
GO

-- A content atom: an input or output of inference (a text, an image, an audio clip, a token
-- list, ...), addressed by the SHA-256 of its content, stored once. CanonicalText holds text
-- content, Payload binary content. ReferenceCount counts the times it was recorded
-- (upsert_content_atom in sql/queries/store.sql).
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.Atoms', N'U') IS NULL
    CREATE TABLE dbo.Atoms (
        AtomId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_Atoms PRIMARY KEY CLUSTERED,
        ContentHash BINARY(32) NOT NULL CONSTRAINT UQ_Atoms_ContentHash UNIQUE,
        Modality NVARCHAR(32) NOT NULL
            CONSTRAINT CK_Atoms_Modality CHECK (
                Modality IN (N'text', N'image', N'audio', N'video', N'embedding', N'tokens', N'other')
            ),
        Subtype NVARCHAR(64) NULL,
        ReferenceCount BIGINT NOT NULL
            CONSTRAINT DF_Atoms_ReferenceCount DEFAULT (0)
            CONSTRAINT CK_Atoms_ReferenceCount CHECK (ReferenceCount >= 0),
        CanonicalText NVARCHAR(MAX) NULL,
        Payload VARBINARY(MAX) NULL,
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_Atoms_CreatedAt DEFAULT (SYSUTCDATETIME())
    );
GO

-- The embedding of a content atom by one model.
--
-- VECTOR(1998): a VECTOR column has one fixed dimension, and 1998 is the float32 maximum of SQL
-- Server 2025 (FACTS.md, "VECTOR(n)"). Shorter embeddings (MiniLM's 384) are stored zero-padded to
-- 1998 with their true length in Dimension: cosine, dot product and L2 distance are unchanged by
-- trailing zeros, so one column serves every model. Rows are compared only within one ModelId.
-- tiberius has no TDS vector type, so vectors travel as JSON array text cast to VECTOR(1998) on
-- the way in and to NVARCHAR(MAX) on the way out (FACTS.md); the JSON must hold exactly 1998
-- numbers.
--
-- SpatialCoarse is a POINT: a 2-D projection of the unit-normalized embedding (the runtime defines
-- the projection), a coarse key to prefilter candidates with the spatial index before the exact
-- VECTOR_DISTANCE.
--
-- No vector index: CREATE VECTOR INDEX (DiskANN) is a preview feature in SQL Server 2025. It needs
-- ALTER DATABASE SCOPED CONFIGURATION SET PREVIEW_FEATURES = ON, at least 100 non-NULL vectors
-- before it can be built, and SQL Server 2025's version of the index makes its table read-only
-- (the version that allows DML exists so far only in Azure SQL). Embeddings are written all the
-- time, so nearest-neighbour queries use exact VECTOR_DISTANCE over one model's rows
-- (IX_AtomEmbeddings_Model), optionally prefiltered by SpatialCoarse.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND OBJECT_ID(N'dbo.AtomEmbeddings', N'U') IS NULL
    CREATE TABLE dbo.AtomEmbeddings (
        EmbeddingId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_AtomEmbeddings PRIMARY KEY CLUSTERED,
        AtomId BIGINT NOT NULL CONSTRAINT FK_AtomEmbeddings_Atoms REFERENCES dbo.Atoms (AtomId),
        ModelId BIGINT NOT NULL CONSTRAINT FK_AtomEmbeddings_Models REFERENCES dbo.Models (ModelId),
        Dimension INT NOT NULL CONSTRAINT CK_AtomEmbeddings_Dimension CHECK (Dimension BETWEEN 1 AND 1998),
        EmbeddingVector VECTOR(1998) NOT NULL,
        SpatialCoarse GEOMETRY NULL
            CONSTRAINT CK_AtomEmbeddings_SpatialCoarse CHECK (
                SpatialCoarse IS NULL OR SpatialCoarse.STGeometryType() = N'Point'
            ),
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_AtomEmbeddings_CreatedAt DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT UQ_AtomEmbeddings_Atom_Model UNIQUE (AtomId, ModelId),
        INDEX IX_AtomEmbeddings_Model NONCLUSTERED (ModelId)
    );
GO

-- Spatial index over the atoms' signatures, to find atoms with similar weight statistics across
-- models. Geometry indexes need a BOUNDING_BOX (xmin, ymin, xmax, ymax); this one covers
-- mean in [-4, 4] and standard deviation in [0, 4], where the weights of the models we serve lie
-- (block matrices near mean 0, norms near 1). A point outside the box is still found: the index
-- files it under the "outside" cell and the exact predicate decides; only selectivity suffers.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'dbo.TensorAtoms') AND name = N'SIX_TensorAtoms_SpatialSignature'
    )
    CREATE SPATIAL INDEX SIX_TensorAtoms_SpatialSignature
        ON dbo.TensorAtoms (SpatialSignature)
        USING GEOMETRY_AUTO_GRID
        WITH (BOUNDING_BOX = (-4, 0, 4, 4), CELLS_PER_OBJECT = 8);
GO

-- Spatial index over the embeddings' coarse keys: projections of unit vectors lie in [-1, 1]².
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'dbo.AtomEmbeddings') AND name = N'SIX_AtomEmbeddings_SpatialCoarse'
    )
    CREATE SPATIAL INDEX SIX_AtomEmbeddings_SpatialCoarse
        ON dbo.AtomEmbeddings (SpatialCoarse)
        USING GEOMETRY_AUTO_GRID
        WITH (BOUNDING_BOX = (-1, -1, 1, 1), CELLS_PER_OBJECT = 8);
GO

-- Recorded last: only a complete version 1 counts as applied.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    INSERT INTO dbo.SchemaVersion (Version, Description)
    VALUES (1, N'model store: models, layers, tensor atoms, coefficients, content atoms, embeddings');
GO

EXEC sys.sp_releaseapplock @Resource = N'hartonomous-schema', @LockOwner = N'Session';
GO
