-- Every statement the SQL Server store sends, in one place, to read, review and parse-check.
--
-- Format: a block starts at a line `-- name: <snake_case>`; the comment lines right after it say
-- what it does and what its parameters are; its text runs to the next `-- name:` line. A block is
-- sent as one batch with tiberius's @P1, @P2, ... parameters (sp_executesql), so it may hold
-- several statements and DECLAREs but never GO.
--
-- Blocks marked "plain batch" take no parameters and must be sent as a plain SQL batch (tiberius
-- simple_query), not through sp_executesql: SET options and #temp tables made inside
-- sp_executesql vanish when it returns, and BEGIN/COMMIT TRANSACTION inside it can trip error 266
-- (transaction count mismatch). Blocks that write run inside the caller's transaction
-- (begin_transaction ... commit_transaction): an ingest is one transaction, an rm is one
-- transaction, and every insert here is keyed (a request key, a UsageKey, a step ordinal, an
-- atom hash), so a retried write (dropped connection, deadlock victim 1205) is never applied
-- twice. The few that are not (a content atom's reference, an appended access rule, a new API
-- key, a revocation) are run again by the store only after the server rolled them back.
--
-- Hashes travel as BINARY(32) parameters, except in batches, where they travel as JSON arrays of
-- 64 hex digits (no 0x) unpacked with OPENJSON: one round trip for many rows, without a
-- table-valued parameter (tiberius has none).
--
-- Geometry columns are never selected as such: tiberius cannot read CLR UDT columns (tiberius
-- issue 257, FACTS.md "Geometry"); they are read through AsBinaryZM() as VARBINARY(MAX).
-- Vectors travel as JSON array text of exactly 1998 numbers, zero-padded (FACTS.md "VECTOR(n)").

-- name: session_options
-- Plain batch, once per connection, right after login. The SET options that indexed views and
-- spatial indexes require for any write to their tables (dbo.TensorAtoms and dbo.AtomEmbeddings
-- carry spatial indexes), whatever the client library's defaults are, and XACT_ABORT so that any
-- error inside a transaction rolls the whole transaction back instead of leaving it half done.
SET ANSI_NULLS ON;
SET ANSI_PADDING ON;
SET ANSI_WARNINGS ON;
SET ARITHABORT ON;
SET CONCAT_NULL_YIELDS_NULL ON;
SET QUOTED_IDENTIFIER ON;
SET NUMERIC_ROUNDABORT OFF;
SET XACT_ABORT ON;

-- name: database_options
-- Plain batch, once per connection after session_options: what the store needs of the database.
-- Returns Version (the applied schema version, 0 on an empty database; the daemon refuses any
-- other version than its own, 4, naming the server and the version it found) and
-- ReadCommittedSnapshot (1 when READ_COMMITTED_SNAPSHOT is on, which 001_core.sql sets: without
-- it every read would wait for an open ingest).
SELECT
    CASE WHEN OBJECT_ID(N'dbo.SchemaVersion', N'U') IS NULL THEN 0
        ELSE (SELECT ISNULL(MAX(Version), 0) FROM dbo.SchemaVersion) END AS Version,
    CAST(d.is_read_committed_snapshot_on AS INT) AS ReadCommittedSnapshot
FROM sys.databases AS d
WHERE d.database_id = DB_ID();

-- name: begin_transaction
-- Plain batch.
BEGIN TRANSACTION;

-- name: commit_transaction
-- Plain batch.
COMMIT TRANSACTION;

-- name: rollback_transaction
-- Plain batch; harmless when XACT_ABORT already rolled the transaction back.
IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;

-- name: begin_model
-- Starts an ingest, inside its transaction: inserts the model with Status 'ingesting', or returns
-- the row already there. @P1 Name, @P2 Version, @P3 Architecture, @P4 Format, @P5 ConfigJson
-- (NULL), @P6 TokenizerKind, @P7 TokenizerMaterial (NULL), @P8 ParameterCount, @P9 TensorCount,
-- @P10 ParentModelId and @P11 DerivedBy (both NULL for an ingested model; set for a derived one,
-- whose layers then name the parent's atoms through insert_layer). WeightsRoot, SourceFileHash and AtomBytes are known only at the end (mark_model_ready).
-- Returns ModelId, Status, Created (1 when this call inserted the row). The caller decides on an
-- existing row: 'ready' is the model already stored (nothing to write); 'ingesting' is the leftover
-- of an ingest that committed its row but not its layers (none of ours does; another tool might):
-- release_model_layers and delete_model_row, then begin_model again.
-- UPDLOCK, HOLDLOCK hold the key range of (Name, Version) to the end of the transaction, so two
-- concurrent ingests of one model serialize here instead of both inserting.
DECLARE @ModelId BIGINT, @Status NVARCHAR(16), @Created INT = 0;
SELECT @ModelId = ModelId, @Status = Status
FROM dbo.Models WITH (UPDLOCK, HOLDLOCK)
WHERE Name = @P1 AND Version = @P2;
IF @ModelId IS NULL
BEGIN
    INSERT INTO dbo.Models (
        Name, Version, Architecture, Format, ConfigJson, TokenizerKind, TokenizerMaterial,
        ParameterCount, TensorCount, Status, ParentModelId, DerivedBy
    )
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, N'ingesting', @P10, @P11);
    SELECT @ModelId = CAST(SCOPE_IDENTITY() AS BIGINT), @Status = N'ingesting', @Created = 1;
END;
SELECT @ModelId AS ModelId, @Status AS Status, @Created AS Created;

-- name: insert_layer
-- One tensor of a model being ingested with its whole atom list, in one round trip: the layer row,
-- its coefficient rows (1.0 each), and one reference per use added to each atom
-- (ReferenceCount = number of coefficient rows pointing at the atom). @P1 ModelId, @P2 Ordinal,
-- @P3 TensorName, @P4 DType, @P5 Shape (JSON array text), @P6 ParameterCount, @P7 ByteLength,
-- @P8 TensorRoot, @P9 JSON array of the atoms' hex hashes in order (position = coefficient
-- Ordinal); every atom must be stored already (put_atoms ran apply_tensor_atom_stage).
-- Returns LayerId, Listed (entries in @P9), Found (entries whose atom is stored) and AtomBytes
-- (their summed ByteLength). The caller fails the ingest when Found < Listed (an atom never put)
-- or AtomBytes <> ByteLength; XACT_ABORT and its rollback undo this block with the rest.
-- Runs once per layer inside the ingest transaction; a retry re-runs the whole transaction.
DECLARE @LayerId BIGINT;
DECLARE @Atoms TABLE (Ordinal INT NOT NULL PRIMARY KEY, AtomId BIGINT NULL, ByteLength INT NULL);
INSERT INTO dbo.ModelLayers (ModelId, Ordinal, TensorName, DType, Shape, ParameterCount, ByteLength, TensorRoot)
VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8);
SET @LayerId = CAST(SCOPE_IDENTITY() AS BIGINT);
INSERT INTO @Atoms (Ordinal, AtomId, ByteLength)
SELECT CAST(j.[key] AS INT), a.AtomId, a.ByteLength
FROM OPENJSON(@P9) AS j
LEFT JOIN dbo.TensorAtoms AS a
    ON a.ContentHash = CONVERT(BINARY(32), CONVERT(VARCHAR(64), j.[value]), 2);
INSERT INTO dbo.TensorAtomCoefficients (LayerId, Ordinal, AtomId, Coefficient)
SELECT @LayerId, t.Ordinal, t.AtomId, 1.0
FROM @Atoms AS t
WHERE t.AtomId IS NOT NULL;
UPDATE a
SET a.ReferenceCount = a.ReferenceCount + u.N
FROM dbo.TensorAtoms AS a WITH (UPDLOCK, HOLDLOCK)
INNER JOIN (
    SELECT t.AtomId, COUNT_BIG(*) AS N FROM @Atoms AS t WHERE t.AtomId IS NOT NULL GROUP BY t.AtomId
) AS u ON u.AtomId = a.AtomId;
SELECT
    @LayerId AS LayerId,
    (SELECT COUNT_BIG(*) FROM @Atoms) AS Listed,
    (SELECT COUNT_BIG(AtomId) FROM @Atoms) AS Found,
    (SELECT ISNULL(SUM(CAST(ByteLength AS BIGINT)), 0) FROM @Atoms) AS AtomBytes;

-- name: mark_model_ready
-- The last write of an ingest, in its transaction: seals the model and makes it visible.
-- @P1 ModelId, @P2 WeightsRoot, @P3 SourceFileHash. AtomBytes becomes the bytes of the distinct
-- atoms the model references. Returns Changed (0 if it was not 'ingesting').
UPDATE dbo.Models
SET
    Status = N'ready',
    WeightsRoot = @P2,
    SourceFileHash = @P3,
    AtomBytes = (
        SELECT ISNULL(SUM(CAST(a.ByteLength AS BIGINT)), 0)
        FROM dbo.TensorAtoms AS a
        WHERE a.AtomId IN (
            SELECT c.AtomId
            FROM dbo.ModelLayers AS l
            INNER JOIN dbo.TensorAtomCoefficients AS c ON c.LayerId = l.LayerId
            WHERE l.ModelId = @P1
        )
    )
WHERE ModelId = @P1 AND Status = N'ingesting';
SELECT @@ROWCOUNT AS Changed;

-- name: list_models
-- Every model, ready or left 'ingesting', by name then version: the columns of a ModelRow, in
-- this order (model_by_id and find_models return the same). CreatedAt as ISO 8601 UTC text.
SELECT
    ModelId, Name, Version, Architecture, Format, TokenizerKind, WeightsRoot, SourceFileHash,
    ParameterCount, TensorCount, AtomBytes, Status,
    CONVERT(VARCHAR(23), CreatedAt, 126) + 'Z' AS CreatedAt, ParentModelId, DerivedBy
FROM dbo.Models
ORDER BY Name, Version;

-- name: model_by_id
-- One model in any status, as list_models. @P1 ModelId.
SELECT
    ModelId, Name, Version, Architecture, Format, TokenizerKind, WeightsRoot, SourceFileHash,
    ParameterCount, TensorCount, AtomBytes, Status,
    CONVERT(VARCHAR(23), CreatedAt, 126) + 'Z' AS CreatedAt, ParentModelId, DerivedBy
FROM dbo.Models
WHERE ModelId = @P1;

-- name: find_models
-- The models of a name, in any status, as list_models: all its versions when @P2 is NULL (the
-- caller reports a name with several as ambiguous), else that version. @P1 Name, @P2 Version.
SELECT
    ModelId, Name, Version, Architecture, Format, TokenizerKind, WeightsRoot, SourceFileHash,
    ParameterCount, TensorCount, AtomBytes, Status,
    CONVERT(VARCHAR(23), CreatedAt, 126) + 'Z' AS CreatedAt, ParentModelId, DerivedBy
FROM dbo.Models
WHERE Name = @P1 AND (@P2 IS NULL OR Version = @P2)
ORDER BY Version;

-- name: list_layers
-- The layers of a model in order. @P1 ModelId. HasGeometry says whether read_layer_geometry has
-- anything to return, without moving the geometry.
SELECT
    LayerId, Ordinal, TensorName, DType, Shape, ParameterCount, ByteLength, TensorRoot,
    CAST(CASE WHEN WeightsGeometry IS NULL THEN 0 ELSE 1 END AS BIT) AS HasGeometry
FROM dbo.ModelLayers
WHERE ModelId = @P1
ORDER BY Ordinal;

-- name: list_model_atoms
-- A model's atom lists in one round trip: every (layer, ordinal) with its atom's hash, in order.
-- The pager fetches the payloads by hash (fetch_tensor_atoms); verify recomputes tensor roots from
-- it. @P1 ModelId.
SELECT l.LayerId, l.Ordinal AS LayerOrdinal, c.Ordinal, a.ContentHash, a.ByteLength, c.Coefficient
FROM dbo.ModelLayers AS l
INNER JOIN dbo.TensorAtomCoefficients AS c ON c.LayerId = l.LayerId
INNER JOIN dbo.TensorAtoms AS a ON a.AtomId = c.AtomId
WHERE l.ModelId = @P1
ORDER BY l.Ordinal, c.Ordinal;

-- name: find_tensor_atoms
-- Which of a batch of hashes are stored, with their reference counts. @P1 JSON array of hex
-- hashes. Returns Ordinal (position in @P1), ContentHash, AtomId, ReferenceCount for the hashes
-- found; the others are not stored.
SELECT CAST(j.[key] AS INT) AS Ordinal, a.ContentHash, a.AtomId, a.ReferenceCount
FROM OPENJSON(@P1) AS j
INNER JOIN dbo.TensorAtoms AS a
    ON a.ContentHash = CONVERT(BINARY(32), CONVERT(VARCHAR(64), j.[value]), 2);

-- name: create_tensor_atom_stage
-- The bulk path for new atoms (tiberius's bulk-load API; FACTS.md). Bulk load cannot write a
-- geometry UDT, so atoms are bulk-loaded into this per-connection staging table with their
-- signature as WKT text, then moved with apply_tensor_atom_stage. Plain batch: a #temp table made
-- inside sp_executesql is dropped on return. On a connection that has the stage already, it
-- empties it (rows left by a failed ingest). Column order is the bulk load's row order.
IF OBJECT_ID(N'tempdb..#TensorAtomStage', N'U') IS NULL
    CREATE TABLE #TensorAtomStage (
        ContentHash BINARY(32) NOT NULL PRIMARY KEY,
        Encoding NVARCHAR(16) NOT NULL,
        ByteLength INT NOT NULL,
        Payload VARBINARY(MAX) NOT NULL,
        SignatureWkt NVARCHAR(200) NULL
    );
ELSE
    TRUNCATE TABLE #TensorAtomStage;

-- name: apply_tensor_atom_stage
-- Plain batch, inside the ingest transaction: moves the atoms of #TensorAtomStage that are not
-- stored yet into dbo.TensorAtoms with ReferenceCount 0 (insert_layer counts the uses, in the same
-- transaction), and empties the stage. The signature's WKT has three numbers, X Y Z (SQL Server's
-- WKT has no Z keyword). Returns NewAtoms and NewBytes; the rest of the batch was stored already.
-- UPDLOCK, HOLDLOCK lock each hash's key range until commit, so two ingests sharing an atom cannot
-- both insert it, and an rm cannot delete it before insert_layer references it.
DECLARE @NewRows TABLE (ByteLength INT NOT NULL);
INSERT INTO dbo.TensorAtoms (ContentHash, Encoding, ByteLength, Payload, ReferenceCount, SpatialSignature)
OUTPUT inserted.ByteLength INTO @NewRows (ByteLength)
SELECT
    s.ContentHash, s.Encoding, s.ByteLength, s.Payload, 0,
    CASE WHEN s.SignatureWkt IS NULL THEN NULL ELSE geometry::STGeomFromText(s.SignatureWkt, 0) END
FROM #TensorAtomStage AS s
WHERE NOT EXISTS (
    SELECT 1 FROM dbo.TensorAtoms AS a WITH (UPDLOCK, HOLDLOCK) WHERE a.ContentHash = s.ContentHash
);
TRUNCATE TABLE #TensorAtomStage;
SELECT
    (SELECT COUNT_BIG(*) FROM @NewRows) AS NewAtoms,
    (SELECT ISNULL(SUM(CAST(ByteLength AS BIGINT)), 0) FROM @NewRows) AS NewBytes;

-- name: fetch_tensor_atoms
-- The pager's hot path: up to N atoms by hash in one round trip. @P1 JSON array of hex hashes.
-- Returns Ordinal (position in @P1), ContentHash, Encoding, ByteLength, Payload; a hash with no row
-- is missing (the caller reports it). At 64 KiB atoms a batch of 256 hashes (FETCH_BATCH_ATOMS) moves
-- 16 MiB, so a 100 MB model costs 7 round trips plus list_layers and list_model_atoms.
SELECT CAST(j.[key] AS INT) AS Ordinal, a.ContentHash, a.Encoding, a.ByteLength, a.Payload
FROM OPENJSON(@P1) AS j
INNER JOIN dbo.TensorAtoms AS a
    ON a.ContentHash = CONVERT(BINARY(32), CONVERT(VARCHAR(64), j.[value]), 2)
ORDER BY Ordinal;

-- name: nearest_tensor_atoms_by_signature
-- Atoms whose weight statistics are closest to (mean, std): the spatial index's nearest-neighbour
-- form (TOP, ORDER BY STDistance, STDistance IS NOT NULL). @P1 mean, @P2 standard deviation,
-- @P3 how many. Returns AtomId, ContentHash, Encoding, the signature as WKB (AsBinaryZM, POINT Z)
-- and Distance.
DECLARE @Probe geometry = geometry::Point(@P1, @P2, 0);
SELECT TOP (@P3)
    a.AtomId, a.ContentHash, a.Encoding, a.SpatialSignature.AsBinaryZM() AS SignatureWkb,
    a.SpatialSignature.STDistance(@Probe) AS Distance
FROM dbo.TensorAtoms AS a
WHERE a.SpatialSignature.STDistance(@Probe) IS NOT NULL
ORDER BY a.SpatialSignature.STDistance(@Probe);

-- name: find_request
-- The request recorded under a key, for the lineage API. @P1 RequestKey.
SELECT r.RequestId
FROM dbo.InferenceRequests AS r
WHERE r.RequestKey = @P1;

-- name: read_model_material
-- What a model needs besides its weights to run: its configuration and tokenizer. @P1 ModelId.
SELECT m.ModelId, m.ConfigJson, m.TokenizerKind, m.TokenizerMaterial
FROM dbo.Models AS m
WHERE m.ModelId = @P1;

-- name: read_layer_geometry
-- A layer's LINESTRING ZM as ISO WKB (type 3002, Z and M kept; FACTS.md "Geometry"), the bytes
-- loader/src/geometry.rs writes. NULL when the layer has none. @P1 LayerId.
SELECT l.LayerId, l.WeightsGeometry.AsBinaryZM() AS GeometryWkb
FROM dbo.ModelLayers AS l
WHERE l.LayerId = @P1;

-- name: list_model_geometries
-- The geometry of each layer of a model that has one, for verify. @P1 ModelId. Returns
-- TensorName, ParameterCount, GeometryWkb (AsBinaryZM: the UDT itself cannot be read).
SELECT l.TensorName, l.ParameterCount, l.WeightsGeometry.AsBinaryZM() AS GeometryWkb
FROM dbo.ModelLayers AS l
WHERE l.ModelId = @P1 AND l.WeightsGeometry IS NOT NULL
ORDER BY l.Ordinal;

-- name: write_layer_geometry_wkt
-- The write path to use until the contract test has shown the WKB one keeps Z and M. @P1 LayerId,
-- @P2 'LINESTRING (x y z m, x y z m, ...)': four numbers a point mean X Y Z M (SQL Server's WKT
-- has no ZM keyword), plain decimals, at least two points (a one-point LINESTRING is invalid).
-- STGeomFromText keeps Z and M (the AsTextZM docs round-trip POINT(1 2 3 4) through it); the cost
-- is text: about 80 characters a point, so 2^20 points are about 160 MB of NVARCHAR.
UPDATE dbo.ModelLayers
SET WeightsGeometry = geometry::STGeomFromText(@P2, 0)
WHERE LayerId = @P1;

-- name: write_layer_geometry_wkb
-- The compact write path: the ISO WKB of loader/src/geometry.rs as it is. @P1 LayerId, @P2 WKB.
-- UNVERIFIED: the STGeomFromWKB docs say nothing of Z and M, and nothing we could read shows
-- SQL Server keeping them from ISO WKB (type 3002). If it drops or rejects them, this fails loudly:
-- CK_ModelLayers_WeightsGeometry requires HasZ = 1 and HasM = 1. The SQL Server contract test must
-- round-trip a LINESTRING ZM through this and read_layer_geometry before the store uses it.
UPDATE dbo.ModelLayers
SET WeightsGeometry = geometry::STGeomFromWKB(@P2, 0)
WHERE LayerId = @P1;

-- name: release_model_layers
-- Drops a model's layers and atom lists and releases its atoms: each atom loses as many references
-- as the model's coefficient rows held, and atoms reaching 0 are deleted (only atoms no other model
-- uses). Used by rm (then delete_model_row) and to clear a leftover 'ingesting' row. @P1 ModelId.
-- Refuses (error 50011) when an atom's ReferenceCount is below the model's own uses of it: damage
-- that removing would hide (verify reports it). Returns Layers (deleted), ReleasedAtoms (distinct
-- atoms the model used), FreedAtoms and FreedBytes (deleted). The model row is locked first so
-- that an rm and an ingest of the same model serialize.
DECLARE @Released TABLE (AtomId BIGINT NOT NULL PRIMARY KEY, N BIGINT NOT NULL);
DECLARE @Freed TABLE (AtomId BIGINT NOT NULL PRIMARY KEY, ByteLength INT NOT NULL);
DECLARE @Layers BIGINT;
IF NOT EXISTS (SELECT 1 FROM dbo.Models WITH (UPDLOCK, HOLDLOCK) WHERE ModelId = @P1)
    THROW 50010, N'no such model id', 1;
INSERT INTO @Released (AtomId, N)
SELECT c.AtomId, COUNT_BIG(*)
FROM dbo.TensorAtomCoefficients AS c
INNER JOIN dbo.ModelLayers AS l ON l.LayerId = c.LayerId
WHERE l.ModelId = @P1
GROUP BY c.AtomId;
IF EXISTS (
    SELECT 1
    FROM dbo.TensorAtoms AS a WITH (UPDLOCK, HOLDLOCK)
    INNER JOIN @Released AS r ON r.AtomId = a.AtomId
    WHERE a.ReferenceCount < r.N
)
    THROW 50011, N'atoms of this model have a ReferenceCount below its own uses of them; nothing was removed', 1;
DELETE c
FROM dbo.TensorAtomCoefficients AS c
INNER JOIN dbo.ModelLayers AS l ON l.LayerId = c.LayerId
WHERE l.ModelId = @P1;
UPDATE a
SET a.ReferenceCount = a.ReferenceCount - r.N
FROM dbo.TensorAtoms AS a WITH (UPDLOCK, HOLDLOCK)
INNER JOIN @Released AS r ON r.AtomId = a.AtomId;
DELETE a
OUTPUT deleted.AtomId, deleted.ByteLength INTO @Freed (AtomId, ByteLength)
FROM dbo.TensorAtoms AS a
INNER JOIN @Released AS r ON r.AtomId = a.AtomId
WHERE a.ReferenceCount = 0;
DELETE FROM dbo.ModelLayers WHERE ModelId = @P1;
SET @Layers = @@ROWCOUNT;
SELECT
    @Layers AS Layers,
    (SELECT COUNT_BIG(*) FROM @Released) AS ReleasedAtoms,
    (SELECT COUNT_BIG(*) FROM @Freed) AS FreedAtoms,
    (SELECT ISNULL(SUM(CAST(ByteLength AS BIGINT)), 0) FROM @Freed) AS FreedBytes;

-- name: delete_model_row
-- The rest of rm, after release_model_layers in the same transaction: the model's embeddings and
-- its row. Steps and usage keep their history (ModelId becomes NULL by ON DELETE SET NULL; the
-- weights root stays). Models derived from it keep working (they hold their own references) and
-- lose only the link: ParentModelId is cleared here, as FK_Models_ParentModel cannot cascade on a
-- self-reference; their DerivedBy still names it. @P1 ModelId. Returns Deleted (0 or 1).
DELETE FROM dbo.AtomEmbeddings WHERE ModelId = @P1;
UPDATE dbo.Models SET ParentModelId = NULL WHERE ParentModelId = @P1;
DELETE FROM dbo.Models WHERE ModelId = @P1;
SELECT @@ROWCOUNT AS Deleted;

-- name: verify_tensor_atoms
-- Every atom (of model @P1, or all when @P1 is NULL) with its payload and the number of
-- coefficient rows naming it, streamed in one statement (one consistent snapshot under
-- READ_COMMITTED_SNAPSHOT) for the client to re-hash: the same checks, in the same words, as the
-- SQLite store (runtime/src/store/verify.rs). Returns ContentHash, Encoding, ByteLength,
-- ReferenceCount, Uses, AtomId, Payload.
SELECT
    a.ContentHash, a.Encoding, a.ByteLength, a.ReferenceCount,
    (SELECT COUNT_BIG(*) FROM dbo.TensorAtomCoefficients AS c WHERE c.AtomId = a.AtomId) AS Uses,
    a.AtomId, a.Payload
FROM dbo.TensorAtoms AS a
WHERE @P1 IS NULL
    OR a.AtomId IN (
        SELECT c.AtomId
        FROM dbo.TensorAtomCoefficients AS c
        INNER JOIN dbo.ModelLayers AS l ON l.LayerId = c.LayerId
        WHERE l.ModelId = @P1
    )
ORDER BY a.AtomId;

-- name: atom_uses
-- Where an atom is used, for reporting damage. @P1 AtomId. Returns Model ('name:version'),
-- TensorName, Ordinal.
SELECT m.Name + N':' + m.Version AS Model, l.TensorName, c.Ordinal
FROM dbo.TensorAtomCoefficients AS c
INNER JOIN dbo.ModelLayers AS l ON l.LayerId = c.LayerId
INNER JOIN dbo.Models AS m ON m.ModelId = l.ModelId
WHERE c.AtomId = @P1
ORDER BY Model, l.TensorName, c.Ordinal;

-- name: verify_tensor_atom_hashes
-- Atoms whose stored bytes no longer hash to their id, recomputed on the server:
-- SHA-256(tag || 0x00 || payload) (ARCHITECTURE.md "Content addressing"; HASHBYTES takes inputs of
-- any length since SQL Server 2016). The tag is ASCII, the same bytes in every collation.
-- @P1 ModelId, or NULL for every atom. Returns only damaged atoms: AtomId, ContentHash, Encoding,
-- ByteLength, StoredLength, ActualHash.
SELECT a.AtomId, a.ContentHash, a.Encoding, a.ByteLength, DATALENGTH(a.Payload) AS StoredLength, h.ActualHash
FROM dbo.TensorAtoms AS a
CROSS APPLY (
    SELECT HASHBYTES('SHA2_256', CAST(CAST(a.Encoding AS VARCHAR(16)) AS VARBINARY(16)) + 0x00 + a.Payload) AS ActualHash
) AS h
WHERE (
        @P1 IS NULL
        OR a.AtomId IN (
            SELECT c.AtomId
            FROM dbo.TensorAtomCoefficients AS c
            INNER JOIN dbo.ModelLayers AS l ON l.LayerId = c.LayerId
            WHERE l.ModelId = @P1
        )
    )
    AND (h.ActualHash <> a.ContentHash OR DATALENGTH(a.Payload) <> a.ByteLength)
ORDER BY a.AtomId;

-- name: verify_reference_counts
-- Atoms whose ReferenceCount differs from the coefficient rows pointing at them, orphans (0 rows)
-- included. Returns AtomId, ContentHash, ReferenceCount, ActualReferences.
SELECT a.AtomId, a.ContentHash, a.ReferenceCount, ISNULL(r.N, 0) AS ActualReferences
FROM dbo.TensorAtoms AS a
LEFT JOIN (
    SELECT c.AtomId, COUNT_BIG(*) AS N
    FROM dbo.TensorAtomCoefficients AS c
    GROUP BY c.AtomId
) AS r ON r.AtomId = a.AtomId
WHERE a.ReferenceCount <> ISNULL(r.N, 0)
ORDER BY a.AtomId;

-- name: verify_layers
-- Layers of a model whose atom list is broken: ordinals not exactly 0..n-1, or atom bytes not
-- adding up to the layer's ByteLength (plain storage: one atom per chunk, coefficient 1.0).
-- @P1 ModelId. Returns LayerId, TensorName, ByteLength, AtomCount, MaxOrdinal, AtomBytes.
-- Tensor roots are recomputed by the client from list_model_atoms.
SELECT
    l.LayerId, l.TensorName, l.ByteLength,
    COUNT_BIG(c.Ordinal) AS AtomCount,
    MAX(c.Ordinal) AS MaxOrdinal,
    ISNULL(SUM(CAST(a.ByteLength AS BIGINT)), 0) AS AtomBytes
FROM dbo.ModelLayers AS l
LEFT JOIN dbo.TensorAtomCoefficients AS c ON c.LayerId = l.LayerId
LEFT JOIN dbo.TensorAtoms AS a ON a.AtomId = c.AtomId
WHERE l.ModelId = @P1
GROUP BY l.LayerId, l.Ordinal, l.TensorName, l.ByteLength
HAVING ISNULL(SUM(CAST(a.ByteLength AS BIGINT)), 0) <> l.ByteLength
    OR (COUNT_BIG(c.Ordinal) > 0 AND MAX(c.Ordinal) <> COUNT_BIG(c.Ordinal) - 1)
    OR MIN(c.Ordinal) <> 0
ORDER BY l.Ordinal;

-- name: upsert_content_atom
-- A content atom by hash: inserted with ReferenceCount 1, or its ReferenceCount goes up by one.
-- @P1 ContentHash, @P2 Modality, @P3 Subtype (NULL), @P4 CanonicalText (NULL), @P5 Payload (NULL).
-- Returns AtomId and Inserted.
DECLARE @AtomId BIGINT, @Inserted BIT = 0;
SELECT @AtomId = AtomId FROM dbo.Atoms WITH (UPDLOCK, HOLDLOCK) WHERE ContentHash = @P1;
IF @AtomId IS NULL
BEGIN
    INSERT INTO dbo.Atoms (ContentHash, Modality, Subtype, ReferenceCount, CanonicalText, Payload)
    VALUES (@P1, @P2, @P3, 1, @P4, @P5);
    SELECT @AtomId = CAST(SCOPE_IDENTITY() AS BIGINT), @Inserted = 1;
END
ELSE
    UPDATE dbo.Atoms SET ReferenceCount = ReferenceCount + 1 WHERE AtomId = @AtomId;
SELECT @AtomId AS AtomId, @Inserted AS Inserted;

-- name: upsert_embedding
-- The embedding of atom @P1 by model @P2, replacing an earlier one of the same atom and model (a
-- retry writes the same values again). @P3 Dimension (true length), @P4 JSON array text of
-- exactly 1998 numbers (the embedding zero-padded), @P5, @P6 the coarse key's X and Y (both NULL
-- for none). Returns EmbeddingId.
DECLARE @EmbeddingId BIGINT;
DECLARE @Vector VECTOR(1998) = CAST(@P4 AS VECTOR(1998));
DECLARE @Coarse geometry = CASE WHEN @P5 IS NULL OR @P6 IS NULL THEN NULL ELSE geometry::Point(@P5, @P6, 0) END;
SELECT @EmbeddingId = EmbeddingId
FROM dbo.AtomEmbeddings WITH (UPDLOCK, HOLDLOCK)
WHERE AtomId = @P1 AND ModelId = @P2;
IF @EmbeddingId IS NULL
BEGIN
    INSERT INTO dbo.AtomEmbeddings (AtomId, ModelId, Dimension, EmbeddingVector, SpatialCoarse)
    VALUES (@P1, @P2, @P3, @Vector, @Coarse);
    SET @EmbeddingId = CAST(SCOPE_IDENTITY() AS BIGINT);
END
ELSE IF EXISTS (
    SELECT 1 FROM dbo.AtomEmbeddings
    WHERE EmbeddingId = @EmbeddingId
        AND (Dimension <> @P3 OR VECTOR_DISTANCE('euclidean', EmbeddingVector, @Vector) > 0)
)
BEGIN
    -- A changed vector is a new row (a new EmbeddingId), so the daemon's search index sees it
    -- (runtime/src/search.rs); the same vector written again changes nothing.
    DELETE FROM dbo.AtomEmbeddings WHERE EmbeddingId = @EmbeddingId;
    INSERT INTO dbo.AtomEmbeddings (AtomId, ModelId, Dimension, EmbeddingVector, SpatialCoarse)
    VALUES (@P1, @P2, @P3, @Vector, @Coarse);
    SET @EmbeddingId = CAST(SCOPE_IDENTITY() AS BIGINT);
END
SELECT @EmbeddingId AS EmbeddingId;

-- name: embedding_watermark
-- The search index's freshness check: how many embeddings model @P1 has and the newest id
-- (0 for none). Returns Embeddings, NewestId.
SELECT COUNT_BIG(*) AS Embeddings, COALESCE(MAX(EmbeddingId), CAST(0 AS BIGINT)) AS NewestId
FROM dbo.AtomEmbeddings
WHERE ModelId = @P1;

-- name: embeddings_after
-- The search index's paged read: at most @P3 embeddings of model @P1 with EmbeddingId above
-- @P2, in id order, with the atom's modality. Returns EmbeddingId, AtomId, Modality, Dimension,
-- EmbeddingJson (1998 numbers; the first Dimension are the embedding).
SELECT TOP (@P3) e.EmbeddingId, e.AtomId, a.Modality, e.Dimension, CAST(e.EmbeddingVector AS NVARCHAR(MAX)) AS EmbeddingJson
FROM dbo.AtomEmbeddings AS e
INNER JOIN dbo.Atoms AS a ON a.AtomId = e.AtomId
WHERE e.ModelId = @P1 AND e.EmbeddingId > @P2
ORDER BY e.EmbeddingId;

-- name: embeddings_of_atoms
-- Model @P1's embeddings of the atoms in @P2 (a JSON array of AtomIds). Returns Ordinal
-- (position in @P2), Dimension, EmbeddingJson, for the atoms that have one.
SELECT CAST(j.[key] AS INT) AS Ordinal, e.Dimension, CAST(e.EmbeddingVector AS NVARCHAR(MAX)) AS EmbeddingJson
FROM OPENJSON(@P2) AS j
INNER JOIN dbo.AtomEmbeddings AS e
    ON e.AtomId = CAST(j.[value] AS BIGINT) AND e.ModelId = @P1;

-- name: content_atoms
-- Content atoms by id, without payloads: @P1 a JSON array of AtomIds. Returns Ordinal, AtomId,
-- ContentHash, Modality, Subtype, CanonicalText, PayloadBytes, for the atoms that exist.
SELECT CAST(j.[key] AS INT) AS Ordinal, a.AtomId, a.ContentHash, a.Modality, a.Subtype, a.CanonicalText,
    CAST(DATALENGTH(a.Payload) AS BIGINT) AS PayloadBytes
FROM OPENJSON(@P1) AS j
INNER JOIN dbo.Atoms AS a ON a.AtomId = CAST(j.[value] AS BIGINT);

-- name: read_embedding
-- An embedding as JSON array text (1998 numbers; the first Dimension are the embedding).
-- @P1 AtomId, @P2 ModelId.
SELECT e.EmbeddingId, e.Dimension, CAST(e.EmbeddingVector AS NVARCHAR(MAX)) AS EmbeddingJson
FROM dbo.AtomEmbeddings AS e
WHERE e.AtomId = @P1 AND e.ModelId = @P2;

-- name: nearest_embeddings_cosine
-- The @P3 embeddings of model @P1 nearest to the query @P2 (JSON, 1998 numbers, zero-padded) by
-- cosine distance, exact (VECTOR_DISTANCE never uses a vector index; there is none, see
-- 001_core.sql), ties to the lower atom id. @P4 the query's true dimension: error 50030 when the
-- model's embeddings have another. Returns AtomId, ContentHash, Distance (0 identical .. 2
-- opposite; cosine similarity = 1 - Distance).
-- The metric stays a literal, one block per metric: no metric name comes from the client, and
-- each block gets its own plan.
DECLARE @Query VECTOR(1998) = CAST(@P2 AS VECTOR(1998));
IF EXISTS (SELECT 1 FROM dbo.AtomEmbeddings WHERE ModelId = @P1 AND Dimension <> @P4)
    THROW 50030, N'the query and the model''s embeddings differ in dimension', 1;
SELECT TOP (@P3) e.AtomId, a.ContentHash, VECTOR_DISTANCE('cosine', e.EmbeddingVector, @Query) AS Distance
FROM dbo.AtomEmbeddings AS e
INNER JOIN dbo.Atoms AS a ON a.AtomId = e.AtomId
WHERE e.ModelId = @P1
ORDER BY Distance, e.AtomId;

-- name: nearest_embeddings_euclidean
-- As nearest_embeddings_cosine, by Euclidean (L2) distance.
DECLARE @Query VECTOR(1998) = CAST(@P2 AS VECTOR(1998));
SELECT TOP (@P3) e.AtomId, e.EmbeddingId, VECTOR_DISTANCE('euclidean', e.EmbeddingVector, @Query) AS Distance
FROM dbo.AtomEmbeddings AS e
WHERE e.ModelId = @P1
ORDER BY Distance;

-- name: nearest_embeddings_dot
-- As nearest_embeddings_cosine, by SQL Server's 'dot' metric, which is the NEGATIVE dot product
-- (smaller is more similar), so the ordering is the same as for the other metrics.
DECLARE @Query VECTOR(1998) = CAST(@P2 AS VECTOR(1998));
SELECT TOP (@P3) e.AtomId, e.EmbeddingId, VECTOR_DISTANCE('dot', e.EmbeddingVector, @Query) AS Distance
FROM dbo.AtomEmbeddings AS e
WHERE e.ModelId = @P1
ORDER BY Distance;

-- name: nearest_embeddings_cosine_prefiltered
-- As nearest_embeddings_cosine, among the embeddings whose coarse key lies within @P6 of the
-- query's (@P4, @P5): the spatial index narrows the rows, the exact distance ranks them. Rows
-- without a coarse key are not candidates.
DECLARE @Query VECTOR(1998) = CAST(@P2 AS VECTOR(1998));
DECLARE @Region geometry = geometry::Point(@P4, @P5, 0).STBuffer(@P6);
SELECT TOP (@P3) e.AtomId, e.EmbeddingId, VECTOR_DISTANCE('cosine', e.EmbeddingVector, @Query) AS Distance
FROM dbo.AtomEmbeddings AS e
WHERE e.ModelId = @P1 AND e.SpatialCoarse.STIntersects(@Region) = 1
ORDER BY Distance;

-- name: insert_request
-- Records a request once per client-chosen key: a retry returns the row of the first attempt.
-- @P1 RequestKey, @P2 Tenant, @P3 Operation, @P4 ModelNames (JSON array), @P5 Status.
-- Returns RequestId and Inserted.
DECLARE @RequestId BIGINT, @Inserted INT = 0;
SELECT @RequestId = RequestId
FROM dbo.InferenceRequests WITH (UPDLOCK, HOLDLOCK)
WHERE RequestKey = @P1;
IF @RequestId IS NULL
BEGIN
    INSERT INTO dbo.InferenceRequests (RequestKey, Tenant, Operation, ModelNames, Status)
    VALUES (@P1, @P2, @P3, @P4, @P5);
    SELECT @RequestId = CAST(SCOPE_IDENTITY() AS BIGINT), @Inserted = 1;
END;
SELECT @RequestId AS RequestId, @Inserted AS Inserted;

-- name: complete_request
-- Closes a request once: a retried completion changes nothing. @P1 RequestId, @P2 Status,
-- @P3 DurationMs, @P4 ErrorMessage (NULL). Returns Changed (0 or 1) and Found (0 when there is no
-- such request: the caller's error).
DECLARE @Changed INT;
UPDATE dbo.InferenceRequests
SET Status = @P2, CompletedAt = SYSUTCDATETIME(), DurationMs = @P3, ErrorMessage = @P4
WHERE RequestId = @P1 AND CompletedAt IS NULL;
SET @Changed = @@ROWCOUNT;
SELECT
    @Changed AS Changed,
    CASE WHEN EXISTS (SELECT 1 FROM dbo.InferenceRequests WHERE RequestId = @P1) THEN 1 ELSE 0 END AS Found;

-- name: read_request
-- A request as recorded. @P1 RequestId. Returns RequestKey, Tenant, Operation, ModelNames,
-- Status, DurationMs, ErrorMessage.
SELECT RequestKey, Tenant, Operation, ModelNames, Status, DurationMs, ErrorMessage
FROM dbo.InferenceRequests
WHERE RequestId = @P1;

-- name: steps_of_request
-- A request's steps in order. @P1 RequestId. Returns Ordinal, Operation, ModelId, WeightsRoot,
-- ParametersJson, Status, DurationMs, Tenant.
SELECT Ordinal, Operation, ModelId, WeightsRoot, ParametersJson, Status, DurationMs, Tenant
FROM dbo.InferenceSteps
WHERE RequestId = @P1
ORDER BY Ordinal;

-- name: usage_of_request
-- A request's usage rows in the order recorded. @P1 RequestId. Returns Tenant, Operation,
-- ModelId, InputTokens, OutputTokens, ComputeMs, ModelName, Vectors, BillingUnits, StatusCode.
SELECT Tenant, Operation, ModelId, InputTokens, OutputTokens, ComputeMs, ModelName, Vectors, BillingUnits, StatusCode
FROM dbo.UsageLedger
WHERE RequestId = @P1
ORDER BY UsageId;

-- name: list_requests_by_tenant
-- A tenant's requests from @P2 to @P3 (DATETIME2, UTC), newest first, at most @P4.
-- @P1 Tenant.
SELECT TOP (@P4)
    RequestId, RequestKey, Operation, ModelNames, Status, RequestedAt, CompletedAt, DurationMs, ErrorMessage
FROM dbo.InferenceRequests
WHERE Tenant = @P1 AND RequestedAt >= @P2 AND RequestedAt < @P3
ORDER BY RequestedAt DESC;

-- name: insert_step
-- Step @P2 of request @P1, once: UNIQUE (RequestId, Ordinal) makes a retry return the first row.
-- @P3 Operation, @P4 ModelId (NULL), @P5 WeightsRoot (NULL), @P6 ParametersJson (NULL),
-- @P7 Status, @P8 DurationMs (NULL), @P9 Tenant. Returns StepId and Inserted.
DECLARE @StepId BIGINT, @Inserted BIT = 0;
SELECT @StepId = StepId
FROM dbo.InferenceSteps WITH (UPDLOCK, HOLDLOCK)
WHERE RequestId = @P1 AND Ordinal = @P2;
IF @StepId IS NULL
BEGIN
    INSERT INTO dbo.InferenceSteps (
        RequestId, Ordinal, Operation, ModelId, WeightsRoot, ParametersJson, Status, DurationMs, Tenant
    )
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9);
    SELECT @StepId = CAST(SCOPE_IDENTITY() AS BIGINT), @Inserted = 1;
END;
SELECT @StepId AS StepId, @Inserted AS Inserted;

-- name: complete_step
-- @P1 StepId, @P2 Status, @P3 DurationMs. Idempotent (sets the same values again).
UPDATE dbo.InferenceSteps SET Status = @P2, DurationMs = @P3 WHERE StepId = @P1;

-- name: insert_usage
-- One ledger row, written once. A row with a UsageKey (@P8; every row governance writes has one)
-- is inserted only if no row has that key: a retried write inserts nothing, and
-- UQ_UsageLedger_UsageKey refuses a duplicate that races past the check. A row without one keeps
-- the guard of schema version 2: one keyless row per (request, operation, model), and rows without
-- a request (@P2 NULL) are always inserted. Each branch is one statement, so its UPDLOCK, HOLDLOCK
-- range lock covers the check and the insert even outside a transaction.
-- @P1 Tenant, @P2 RequestId (NULL), @P3 Operation, @P4 ModelId (NULL), @P5 InputTokens,
-- @P6 OutputTokens, @P7 ComputeMs, @P8 UsageKey (NULL), @P9 ModelName ('' for none), @P10 Vectors,
-- @P11 BillingUnits, @P12 StatusCode. Returns Inserted (0 or 1).
DECLARE @Inserted INT;
IF @P8 IS NOT NULL
BEGIN
    INSERT INTO dbo.UsageLedger (
        Tenant, RequestId, Operation, ModelId, InputTokens, OutputTokens, ComputeMs,
        UsageKey, ModelName, Vectors, BillingUnits, StatusCode
    )
    SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12
    WHERE NOT EXISTS (
        SELECT 1 FROM dbo.UsageLedger WITH (UPDLOCK, HOLDLOCK)
        WHERE UsageKey = @P8 AND UsageKey IS NOT NULL
    );
    SET @Inserted = @@ROWCOUNT;
END
ELSE
BEGIN
    INSERT INTO dbo.UsageLedger (
        Tenant, RequestId, Operation, ModelId, InputTokens, OutputTokens, ComputeMs,
        UsageKey, ModelName, Vectors, BillingUnits, StatusCode
    )
    SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7, NULL, @P9, @P10, @P11, @P12
    WHERE @P2 IS NULL
        OR NOT EXISTS (
            SELECT 1 FROM dbo.UsageLedger WITH (UPDLOCK, HOLDLOCK)
            WHERE RequestId = @P2
                AND Operation = @P3
                AND (ModelId = @P4 OR (ModelId IS NULL AND @P4 IS NULL))
                AND UsageKey IS NULL
        );
    SET @Inserted = @@ROWCOUNT;
END;
SELECT @Inserted AS Inserted;

-- name: usage_by_tenant
-- A tenant's usage from @P2 to @P3 (DATETIME2, UTC) by operation and model. @P1 Tenant.
SELECT
    u.Operation, u.ModelId, m.Name AS ModelName, COUNT_BIG(*) AS Entries,
    SUM(u.InputTokens) AS InputTokens, SUM(u.OutputTokens) AS OutputTokens,
    SUM(CAST(u.ComputeMs AS FLOAT)) AS ComputeMs
FROM dbo.UsageLedger AS u
LEFT JOIN dbo.Models AS m ON m.ModelId = u.ModelId
WHERE u.Tenant = @P1 AND u.RecordedAt >= @P2 AND u.RecordedAt < @P3
GROUP BY u.Operation, u.ModelId, m.Name
ORDER BY u.Operation, m.Name;

-- name: list_governance
-- Everything the daemon enforces, as four result sets: tenants by name (TenantName, RatePlan,
-- RequestsPerMinute, TokensPerMinute; NULL = no limit), API keys revoked ones included, by tenant,
-- creation and id (KeyId, TenantName, Label, KeyHash, CreatedAt, RevokedAt as ISO 8601 UTC text,
-- RevokedAt NULL while valid), access rules by tenant then position (RuleId, TenantName,
-- Position, Effect, Operation, ModelPattern), and rates by plan then operation (RatePlan,
-- Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector). The caller runs it
-- inside begin_transaction ... commit_transaction: HOLDLOCK makes these locking reads (not the
-- row versions READ_COMMITTED_SNAPSHOT would give each statement) held to the commit, so the
-- four sets are one consistent state: no key without its tenant. The tables are small, and the
-- writers that wait are key and rule administration.
SELECT TenantName, RatePlan, RequestsPerMinute, TokensPerMinute
FROM dbo.Tenants WITH (HOLDLOCK)
ORDER BY TenantName;
SELECT
    k.KeyId, k.TenantName, k.Label, k.KeyHash,
    CONVERT(VARCHAR(23), k.CreatedAt, 126) + 'Z' AS CreatedAt,
    CONVERT(VARCHAR(23), k.RevokedAt, 126) + 'Z' AS RevokedAt
FROM dbo.ApiKeys AS k WITH (HOLDLOCK)
ORDER BY k.TenantName, k.CreatedAt, k.KeyId;
SELECT RuleId, TenantName, Position, Effect, Operation, ModelPattern
FROM dbo.AccessRules WITH (HOLDLOCK)
ORDER BY TenantName, Position, RuleId;
SELECT RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector
FROM dbo.OperationRates WITH (HOLDLOCK)
ORDER BY RatePlan, Operation;

-- name: upsert_tenant
-- Creates or updates a tenant's plan and limits, inside the caller's transaction (the UPDLOCK,
-- HOLDLOCK range lock holds to its commit, so two writers of a new tenant serialize instead of
-- both inserting). @P1 TenantName, @P2 RatePlan, @P3 RequestsPerMinute (NULL = no limit),
-- @P4 TokensPerMinute (NULL = no limit).
IF EXISTS (SELECT 1 FROM dbo.Tenants WITH (UPDLOCK, HOLDLOCK) WHERE TenantName = @P1)
    UPDATE dbo.Tenants
    SET RatePlan = @P2, RequestsPerMinute = @P3, TokensPerMinute = @P4
    WHERE TenantName = @P1;
ELSE
    INSERT INTO dbo.Tenants (TenantName, RatePlan, RequestsPerMinute, TokensPerMinute)
    VALUES (@P1, @P2, @P3, @P4);

-- name: insert_api_key
-- Stores a key's hash, creating its tenant (standard plan, no limits) if new, inside the caller's
-- transaction. Nothing is written when a key with this id or this hash exists: Taken is then 1
-- and the caller reports it. @P1 KeyId, @P2 TenantName, @P3 Label, @P4 KeyHash (SHA-256 of the
-- bearer token). Returns Taken (0 or 1).
DECLARE @Taken INT = 0;
IF EXISTS (SELECT 1 FROM dbo.ApiKeys WITH (UPDLOCK, HOLDLOCK) WHERE KeyId = @P1 OR KeyHash = @P4)
    SET @Taken = 1;
ELSE
BEGIN
    IF NOT EXISTS (SELECT 1 FROM dbo.Tenants WITH (UPDLOCK, HOLDLOCK) WHERE TenantName = @P2)
        INSERT INTO dbo.Tenants (TenantName) VALUES (@P2);
    INSERT INTO dbo.ApiKeys (KeyId, TenantName, Label, KeyHash)
    VALUES (@P1, @P2, @P3, @P4);
END;
SELECT @Taken AS Taken;

-- name: revoke_api_key
-- Marks a key revoked now; a key already revoked keeps its first RevokedAt. @P1 KeyId.
-- Returns Changed (0 when no unrevoked key has this id).
UPDATE dbo.ApiKeys
SET RevokedAt = SYSUTCDATETIME()
WHERE KeyId = @P1 AND RevokedAt IS NULL;
SELECT @@ROWCOUNT AS Changed;

-- name: insert_access_rule
-- Appends a rule to its tenant's list (Position = the tenant's highest + 1, from 1), creating the
-- tenant (standard plan, no limits) if new, inside the caller's transaction: the UPDLOCK, HOLDLOCK
-- range lock on the tenant's rules holds to its commit, so two appends to one tenant serialize
-- instead of taking the same position. @P1 TenantName, @P2 Effect ('allow' | 'deny'),
-- @P3 Operation (a name or '*'), @P4 ModelPattern. Returns RuleId.
DECLARE @Position INT;
IF NOT EXISTS (SELECT 1 FROM dbo.Tenants WITH (UPDLOCK, HOLDLOCK) WHERE TenantName = @P1)
    INSERT INTO dbo.Tenants (TenantName) VALUES (@P1);
SELECT @Position = ISNULL(MAX(Position), 0) + 1
FROM dbo.AccessRules WITH (UPDLOCK, HOLDLOCK)
WHERE TenantName = @P1;
INSERT INTO dbo.AccessRules (TenantName, Position, Effect, Operation, ModelPattern)
VALUES (@P1, @Position, @P2, @P3, @P4);
SELECT CAST(SCOPE_IDENTITY() AS BIGINT) AS RuleId;

-- name: delete_access_rule
-- Removes one rule; the tenant's other rules keep their positions. @P1 RuleId. Returns Changed
-- (0 when there is no such rule).
DELETE FROM dbo.AccessRules WHERE RuleId = @P1;
SELECT @@ROWCOUNT AS Changed;

-- name: upsert_operation_rate
-- Creates or replaces the rate of one operation under one plan, inside the caller's transaction
-- (as upsert_tenant). @P1 RatePlan, @P2 Operation, @P3 PerRequest, @P4 Per1kInputTokens,
-- @P5 Per1kOutputTokens, @P6 PerVector.
IF EXISTS (SELECT 1 FROM dbo.OperationRates WITH (UPDLOCK, HOLDLOCK) WHERE RatePlan = @P1 AND Operation = @P2)
    UPDATE dbo.OperationRates
    SET PerRequest = @P3, Per1kInputTokens = @P4, Per1kOutputTokens = @P5, PerVector = @P6
    WHERE RatePlan = @P1 AND Operation = @P2;
ELSE
    INSERT INTO dbo.OperationRates (RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector)
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6);

-- name: list_usage
-- Ledger rows newest first (by UsageId, the order they were written), at most @P3. @P1 Tenant
-- (NULL = every tenant); @P2 the earliest RecordedAt as ISO 8601 text (NULL = all time): UTC when
-- it ends in Z or has no zone, else converted from its offset to UTC, as RecordedAt is UTC. Error
-- 50040 when @P2 is not an ISO 8601 time. Returns UsageId, Tenant, RequestKey (NULL for a row
-- without a request), Operation, ModelName, InputTokens, OutputTokens, Vectors, ComputeMs,
-- BillingUnits, StatusCode, RecordedAt (ISO 8601 UTC text). RECOMPILE gives each call a plan for
-- the filters it has: the clustered index backwards for all tenants, the tenant's index for one.
DECLARE @Since DATETIME2(7) = CAST(
    SWITCHOFFSET(TRY_CONVERT(DATETIMEOFFSET(7), @P2, 127), '+00:00') AS DATETIME2(7)
);
IF @P2 IS NOT NULL AND @Since IS NULL
    THROW 50040, N'the start time is not an ISO 8601 time: write it as 2025-01-31T00:00:00Z', 1;
SELECT TOP (@P3)
    u.UsageId, u.Tenant, r.RequestKey, u.Operation, u.ModelName, u.InputTokens, u.OutputTokens,
    u.Vectors, u.ComputeMs, u.BillingUnits, u.StatusCode,
    CONVERT(VARCHAR(23), u.RecordedAt, 126) + 'Z' AS RecordedAt
FROM dbo.UsageLedger AS u
LEFT JOIN dbo.InferenceRequests AS r ON r.RequestId = u.RequestId
WHERE (@P1 IS NULL OR u.Tenant = @P1) AND (@Since IS NULL OR u.RecordedAt >= @Since)
ORDER BY u.UsageId DESC
OPTION (RECOMPILE);

-- name: upsert_graph_node
-- The node of (kind, id), created on first use with the content hash of what it stands for (an
-- atom's hash, a model's weights root; NULL for requests), so lineage outlives the row. @P1
-- NodeKind ('atom' | 'model' | 'request'), @P2 RefId. Error 50021 when the row it would stand for
-- does not exist.
DECLARE @Exists INT = CASE
    WHEN @P1 = N'atom' AND EXISTS (SELECT 1 FROM dbo.Atoms WHERE AtomId = @P2) THEN 1
    WHEN @P1 = N'model' AND EXISTS (SELECT 1 FROM dbo.Models WHERE ModelId = @P2) THEN 1
    WHEN @P1 = N'request' AND EXISTS (SELECT 1 FROM dbo.InferenceRequests WHERE RequestId = @P2) THEN 1
    ELSE 0
END;
IF @Exists = 0
    THROW 50021, N'a lineage edge names a row that does not exist', 1;
IF NOT EXISTS (
    SELECT 1 FROM graph.AtomGraphNodes WITH (UPDLOCK, HOLDLOCK)
    WHERE NodeKind = @P1 AND RefId = @P2
)
    INSERT INTO graph.AtomGraphNodes (NodeKind, RefId, ContentHash)
    VALUES (
        @P1, @P2,
        CASE @P1
            WHEN N'atom' THEN (SELECT ContentHash FROM dbo.Atoms WHERE AtomId = @P2)
            WHEN N'model' THEN (SELECT WeightsRoot FROM dbo.Models WHERE ModelId = @P2)
        END
    );

-- name: insert_graph_edge
-- An edge between two existing nodes (upsert_graph_node first), once per (from, to, relation),
-- as in the SQLite store. @P1 from NodeKind, @P2 from RefId, @P3 to NodeKind, @P4 to RefId,
-- @P5 RelationType, @P6 Weight, @P7 RequestId (NULL). Returns Inserted (0 or 1).
DECLARE @From NVARCHAR(1000), @To NVARCHAR(1000);
SELECT @From = $node_id FROM graph.AtomGraphNodes WHERE NodeKind = @P1 AND RefId = @P2;
SELECT @To = $node_id FROM graph.AtomGraphNodes WHERE NodeKind = @P3 AND RefId = @P4;
IF @From IS NULL OR @To IS NULL
    THROW 50020, N'insert_graph_edge: an endpoint node does not exist (call upsert_graph_node first)', 1;
IF NOT EXISTS (
    SELECT 1 FROM graph.AtomGraphEdges WITH (UPDLOCK, HOLDLOCK)
    WHERE $from_id = @From AND $to_id = @To AND RelationType = @P5
)
BEGIN
    INSERT INTO graph.AtomGraphEdges ($from_id, $to_id, RelationType, Weight, RequestId)
    VALUES (@From, @To, @P5, @P6, @P7);
    SELECT CAST(1 AS INT) AS Inserted;
END
ELSE
    SELECT CAST(0 AS INT) AS Inserted;

-- name: edges_of_request
-- The lineage edges recorded with a request, in the order they were added. @P1 RequestId.
-- Returns FromKind, FromRef, ToKind, ToRef, RelationType, Weight.
SELECT f.NodeKind AS FromKind, f.RefId AS FromRef, t.NodeKind AS ToKind, t.RefId AS ToRef, e.RelationType, e.Weight
FROM graph.AtomGraphEdges AS e
INNER JOIN graph.AtomGraphNodes AS f ON f.$node_id = e.$from_id
INNER JOIN graph.AtomGraphNodes AS t ON t.$node_id = e.$to_id
WHERE e.RequestId = @P1
ORDER BY e.EdgeId;

-- name: lineage_from_node
-- The nodes one edge away from (kind, id), with the relation: what a request consumed and
-- produced, which requests used a model. @P1 NodeKind, @P2 RefId. Returns RelationType, Weight,
-- RequestId, NodeKind, RefId, ContentHash of the neighbours.
SELECT e.RelationType, e.Weight, e.RequestId, n2.NodeKind, n2.RefId, n2.ContentHash
FROM graph.AtomGraphNodes AS n1, graph.AtomGraphEdges AS e, graph.AtomGraphNodes AS n2
WHERE MATCH(n1-(e)->n2) AND n1.NodeKind = @P1 AND n1.RefId = @P2
ORDER BY e.RelationType, n2.NodeKind, n2.RefId;
