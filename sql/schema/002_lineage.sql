-- Hartonomous schema, version 2: requests, their steps, lineage and usage.
--
-- What the daemon did, for whom, with which weights (dbo.InferenceRequests, dbo.InferenceSteps),
-- how inputs, outputs, models and steps relate (graph.AtomGraphNodes, graph.AtomGraphEdges), and
-- what it cost (dbo.UsageLedger). Applied after 001_core.sql, with the same guards: each batch
-- runs only while version 2 is unrecorded and its object is missing; the version row comes last.

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

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 1)
    THROW 50001, N'schema version 1 is not applied: run sql/schema/001_core.sql first', 1;
GO

-- One request to the daemon (an embedding, a generation, an ingest...). RequestKey is chosen by
-- the client before the first attempt (any string up to 200 characters: a UUID, an idempotency
-- key header): a write retried after a dropped connection or a deadlock
-- finds its row by that key and is never applied twice (insert_request). ModelNames is a JSON array
-- of the model names the request named. Status values are the runtime's; CompletedAt stays NULL
-- while the request runs.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND OBJECT_ID(N'dbo.InferenceRequests', N'U') IS NULL
    CREATE TABLE dbo.InferenceRequests (
        RequestId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_InferenceRequests PRIMARY KEY CLUSTERED,
        RequestKey NVARCHAR(200) NOT NULL CONSTRAINT UQ_InferenceRequests_RequestKey UNIQUE,
        Tenant NVARCHAR(128) NOT NULL,
        Operation NVARCHAR(64) NOT NULL,
        ModelNames NVARCHAR(MAX) NOT NULL
            CONSTRAINT CK_InferenceRequests_ModelNames CHECK (ISJSON(ModelNames) = 1),
        Status NVARCHAR(16) NOT NULL,
        RequestedAt DATETIME2(7) NOT NULL
            CONSTRAINT DF_InferenceRequests_RequestedAt DEFAULT (SYSUTCDATETIME()),
        CompletedAt DATETIME2(7) NULL,
        DurationMs FLOAT NULL,
        ErrorMessage NVARCHAR(MAX) NULL,
        -- A tenant's requests over time (list_requests_by_tenant).
        INDEX IX_InferenceRequests_Tenant_RequestedAt NONCLUSTERED (Tenant, RequestedAt)
    );
GO

-- One step of a request, in order: which operation ran on which model, under which weights root
-- (kept even after the model is removed: ModelId then becomes NULL, the fingerprint stays).
-- UNIQUE (RequestId, Ordinal) makes a retried step insert a no-op (insert_step).
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND OBJECT_ID(N'dbo.InferenceSteps', N'U') IS NULL
    CREATE TABLE dbo.InferenceSteps (
        StepId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_InferenceSteps PRIMARY KEY CLUSTERED,
        RequestId BIGINT NOT NULL
            CONSTRAINT FK_InferenceSteps_InferenceRequests REFERENCES dbo.InferenceRequests (RequestId),
        Ordinal INT NOT NULL CONSTRAINT CK_InferenceSteps_Ordinal CHECK (Ordinal >= 0),
        Operation NVARCHAR(64) NOT NULL,
        ModelId BIGINT NULL
            CONSTRAINT FK_InferenceSteps_Models REFERENCES dbo.Models (ModelId) ON DELETE SET NULL,
        WeightsRoot BINARY(32) NULL,
        ParametersJson NVARCHAR(MAX) NULL
            CONSTRAINT CK_InferenceSteps_ParametersJson CHECK (ParametersJson IS NULL OR ISJSON(ParametersJson) = 1),
        Status NVARCHAR(16) NOT NULL,
        StartedAt DATETIME2(7) NOT NULL CONSTRAINT DF_InferenceSteps_StartedAt DEFAULT (SYSUTCDATETIME()),
        DurationMs FLOAT NULL,
        Tenant NVARCHAR(128) NOT NULL,
        CONSTRAINT UQ_InferenceSteps_Request_Ordinal UNIQUE (RequestId, Ordinal),
        -- Finds the steps to detach when a model is removed (ON DELETE SET NULL).
        INDEX IX_InferenceSteps_Model NONCLUSTERED (ModelId)
    );
GO

-- Lineage lives in its own schema. CREATE SCHEMA must be alone in its batch, hence EXEC.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND SCHEMA_ID(N'graph') IS NULL
    EXEC (N'CREATE SCHEMA graph AUTHORIZATION dbo');
GO

-- A node of the lineage graph: a content atom, a model, a request or a step, by its id in the
-- table of its kind (RefId) and, for atoms and models, its content hash or weights root. SQL Graph
-- (FACTS.md, "Graph tables") adds the $node_id pseudo-column and its unique index itself.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND OBJECT_ID(N'graph.AtomGraphNodes', N'U') IS NULL
    CREATE TABLE graph.AtomGraphNodes (
        NodeKind NVARCHAR(16) NOT NULL
            CONSTRAINT CK_AtomGraphNodes_NodeKind CHECK (NodeKind IN (N'atom', N'model', N'request', N'step')),
        RefId BIGINT NOT NULL,
        ContentHash BINARY(32) NULL,
        -- One node per thing: upsert_graph_node and insert_graph_edge find nodes by this key.
        CONSTRAINT UQ_AtomGraphNodes_Kind_Ref UNIQUE (NodeKind, RefId)
    ) AS NODE;
GO

-- An edge of the lineage graph (input_of, produced, used_model, derived_from, ...; the relation
-- names are the runtime's), with a weight and the request that created it. The CONNECTION
-- constraint admits only node-to-node edges of this graph; nodes are never deleted, so NO ACTION.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND OBJECT_ID(N'graph.AtomGraphEdges', N'U') IS NULL
    CREATE TABLE graph.AtomGraphEdges (
        -- Insertion order, for reading a request's edges back in the order they were added.
        EdgeId BIGINT IDENTITY(1, 1) NOT NULL,
        RelationType NVARCHAR(64) NOT NULL,
        Weight FLOAT NOT NULL CONSTRAINT DF_AtomGraphEdges_Weight DEFAULT (1.0),
        RequestId BIGINT NULL,
        CONSTRAINT EC_AtomGraphEdges_Nodes
            CONNECTION (graph.AtomGraphNodes TO graph.AtomGraphNodes) ON DELETE NO ACTION
    ) AS EDGE;
GO

-- SQL Server indexes an edge table's $edge_id only; MATCH walks and the duplicate-edge guard of
-- insert_graph_edge look edges up by their endpoints.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'graph.AtomGraphEdges') AND name = N'IX_AtomGraphEdges_From_To'
    )
    CREATE NONCLUSTERED INDEX IX_AtomGraphEdges_From_To ON graph.AtomGraphEdges ($from_id, $to_id);
GO

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'graph.AtomGraphEdges') AND name = N'IX_AtomGraphEdges_To_From'
    )
    CREATE NONCLUSTERED INDEX IX_AtomGraphEdges_To_From ON graph.AtomGraphEdges ($to_id, $from_id);
GO

-- What each tenant used: tokens in and out and compute time, per request, operation and model.
-- Rows stay when a model is removed (ModelId becomes NULL). insert_usage is guarded so that a
-- retried write for the same (request, operation, model) is not counted twice.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    AND OBJECT_ID(N'dbo.UsageLedger', N'U') IS NULL
    CREATE TABLE dbo.UsageLedger (
        UsageId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_UsageLedger PRIMARY KEY CLUSTERED,
        Tenant NVARCHAR(128) NOT NULL,
        RequestId BIGINT NULL
            CONSTRAINT FK_UsageLedger_InferenceRequests REFERENCES dbo.InferenceRequests (RequestId),
        Operation NVARCHAR(64) NOT NULL,
        ModelId BIGINT NULL
            CONSTRAINT FK_UsageLedger_Models REFERENCES dbo.Models (ModelId) ON DELETE SET NULL,
        InputTokens BIGINT NOT NULL CONSTRAINT CK_UsageLedger_InputTokens CHECK (InputTokens >= 0),
        OutputTokens BIGINT NOT NULL CONSTRAINT CK_UsageLedger_OutputTokens CHECK (OutputTokens >= 0),
        ComputeMs FLOAT NOT NULL CONSTRAINT CK_UsageLedger_ComputeMs CHECK (ComputeMs >= 0),
        RecordedAt DATETIME2(7) NOT NULL CONSTRAINT DF_UsageLedger_RecordedAt DEFAULT (SYSUTCDATETIME()),
        -- Billing: a tenant's usage over time (usage_by_tenant).
        INDEX IX_UsageLedger_Tenant_RecordedAt NONCLUSTERED (Tenant, RecordedAt),
        -- The retry guard of insert_usage, and usage of one request.
        INDEX IX_UsageLedger_Request NONCLUSTERED (RequestId, Operation, ModelId),
        -- Finds the rows to detach when a model is removed (ON DELETE SET NULL).
        INDEX IX_UsageLedger_Model NONCLUSTERED (ModelId)
    );
GO

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 2)
    INSERT INTO dbo.SchemaVersion (Version, Description)
    VALUES (2, N'requests, steps, lineage graph and usage ledger');
GO

EXEC sys.sp_releaseapplock @Resource = N'hartonomous-schema', @LockOwner = N'Session';
GO
