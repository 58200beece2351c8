-- Hartonomous schema, version 3: models' lineage.
--
-- A derived model (`hartonomous student`: a subset of a model's blocks, or a pruned copy) reuses
-- its parent's tensor atoms through its own coefficient rows and reference counts; its row names
-- the parent (ParentModelId) and says how it was made (DerivedBy: the operation, the parent's
-- name and weights root, readable after the parent is gone). SourceFileHash of a derived model is
-- the SHA-256 of its derivation (runtime/src/student.rs), as it was read from no file.
--
-- The foreign key has no ON DELETE action: SQL Server refuses cascading actions on a
-- self-reference (error 1785, "may cause cycles or multiple cascade paths"), so delete_model_row
-- sets the children's ParentModelId to NULL itself before deleting a model. Applied after
-- 002_lineage.sql, with the same guards: each batch runs only while version 3 is unrecorded and
-- its change is missing; the version row comes last.

SET ANSI_NULLS ON;
SET ANSI_PADDING ON;
SET ANSI_WARNINGS ON;
SET ARITHABORT ON;
SET CONCAT_NULL_YIELDS_NULL ON;
SET QUOTED_IDENTIFIER ON;
SET NUMERIC_ROUNDABORT OFF;
SET XACT_ABORT ON;
GO

DECLARE @lock INT;
EXEC @lock = sys.sp_getapplock
    @Resource = N'hartonomous-schema',
    @LockMode = N'Exclusive',
    @LockOwner = N'Session',
    @LockTimeout = 60000;
IF @lock < 0
    THROW 50000, N'could not lock the Hartonomous schema within 60 s: another installer is running', 1;
GO

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    THROW 50001, N'schema version 2 is not applied: run sql/schema/002_lineage.sql first', 1;
GO

-- Both columns in one ALTER, so a half-applied script never leaves one without the other.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 3)
    AND COL_LENGTH(N'dbo.Models', N'ParentModelId') IS NULL
    ALTER TABLE dbo.Models ADD
        ParentModelId BIGINT NULL
            CONSTRAINT FK_Models_ParentModel REFERENCES dbo.Models (ModelId),
        DerivedBy NVARCHAR(1000) NULL;
GO

-- Removing a model detaches its children by this index (delete_model_row), and the foreign key
-- check on deleting a model row uses it.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 3)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'dbo.Models') AND name = N'IX_Models_ParentModelId'
    )
    CREATE NONCLUSTERED INDEX IX_Models_ParentModelId ON dbo.Models (ParentModelId);
GO

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 3)
    INSERT INTO dbo.SchemaVersion (Version, Description)
    VALUES (3, N'models'' lineage: ParentModelId and DerivedBy');
GO

EXEC sys.sp_releaseapplock @Resource = N'hartonomous-schema', @LockOwner = N'Session';
GO
