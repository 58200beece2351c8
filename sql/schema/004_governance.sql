-- Hartonomous schema, version 4: governance.
--
-- Who may call the daemon and what it costs them: tenants with their rate plan and limits
-- (dbo.Tenants), API keys kept only as the SHA-256 of the bearer token (dbo.ApiKeys), ordered
-- allow/deny rules per tenant (dbo.AccessRules), the billing rate of each operation under each plan
-- (dbo.OperationRates, the `standard` plan seeded), and the usage ledger's columns for one row per
-- answered request: the model(s) as the request named them, vectors, billing units, the status
-- answered, and a unique UsageKey so that a retried write is not counted twice. The same tables
-- and columns as the embedded SQLite store's version 3 (runtime/src/store/sqlite/statements.rs,
-- MIGRATE_TO_3), with the same seed numbers. Applied after 003_model_lineage.sql, with the same
-- guards: each batch runs only while version 4 is unrecorded and its object is missing; the
-- version row comes last.
--
-- UQ_UsageLedger_UsageKey is a filtered index: every write to dbo.UsageLedger must then run with
-- ANSI_NULLS, ANSI_PADDING, ANSI_WARNINGS, ARITHABORT, CONCAT_NULL_YIELDS_NULL and
-- QUOTED_IDENTIFIER on and NUMERIC_ROUNDABORT off, as the daemon's session_options sets them.

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

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 3)
    THROW 50001, N'schema version 3 is not applied: run sql/schema/003_model_lineage.sql first', 1;
GO

-- A tenant, created by its first key or rule (insert_api_key, insert_access_rule) with the
-- standard plan and no limits, or set by put_tenant. NULL limits mean no limit.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND OBJECT_ID(N'dbo.Tenants', N'U') IS NULL
    CREATE TABLE dbo.Tenants (
        TenantName NVARCHAR(128) NOT NULL CONSTRAINT PK_Tenants PRIMARY KEY CLUSTERED,
        RatePlan NVARCHAR(64) NOT NULL CONSTRAINT DF_Tenants_RatePlan DEFAULT (N'standard'),
        RequestsPerMinute BIGINT NULL
            CONSTRAINT CK_Tenants_RequestsPerMinute CHECK (RequestsPerMinute IS NULL OR RequestsPerMinute > 0),
        TokensPerMinute BIGINT NULL
            CONSTRAINT CK_Tenants_TokensPerMinute CHECK (TokensPerMinute IS NULL OR TokensPerMinute > 0),
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_Tenants_CreatedAt DEFAULT (SYSUTCDATETIME())
    );
GO

-- An API key: a short public id (the token's first characters, for listing and revoking) and the
-- SHA-256 of the whole bearer token; the token itself is never stored. Revoked keys stay, with
-- RevokedAt set, so the daemon can say a key was revoked rather than unknown.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND OBJECT_ID(N'dbo.ApiKeys', N'U') IS NULL
    CREATE TABLE dbo.ApiKeys (
        KeyId NVARCHAR(64) NOT NULL CONSTRAINT PK_ApiKeys PRIMARY KEY CLUSTERED,
        TenantName NVARCHAR(128) NOT NULL
            CONSTRAINT FK_ApiKeys_Tenants REFERENCES dbo.Tenants (TenantName),
        Label NVARCHAR(200) NOT NULL CONSTRAINT DF_ApiKeys_Label DEFAULT (N''),
        KeyHash BINARY(32) NOT NULL CONSTRAINT UQ_ApiKeys_KeyHash UNIQUE,
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_ApiKeys_CreatedAt DEFAULT (SYSUTCDATETIME()),
        RevokedAt DATETIME2(7) NULL,
        -- The foreign key check when a tenant's row changes, and a tenant's keys.
        INDEX IX_ApiKeys_TenantName NONCLUSTERED (TenantName)
    );
GO

-- A tenant's access rules, evaluated in Position order (ascending); insert_access_rule appends
-- (Position = the tenant's highest + 1), so positions are unique within a tenant. Operation is an
-- operation name or '*'; ModelPattern a glob over NAME:VERSION.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND OBJECT_ID(N'dbo.AccessRules', N'U') IS NULL
    CREATE TABLE dbo.AccessRules (
        RuleId BIGINT IDENTITY(1, 1) NOT NULL CONSTRAINT PK_AccessRules PRIMARY KEY CLUSTERED,
        TenantName NVARCHAR(128) NOT NULL
            CONSTRAINT FK_AccessRules_Tenants REFERENCES dbo.Tenants (TenantName),
        Position INT NOT NULL CONSTRAINT CK_AccessRules_Position CHECK (Position > 0),
        Effect NVARCHAR(8) NOT NULL CONSTRAINT CK_AccessRules_Effect CHECK (Effect IN (N'allow', N'deny')),
        Operation NVARCHAR(64) NOT NULL,
        ModelPattern NVARCHAR(400) NOT NULL,
        CreatedAt DATETIME2(7) NOT NULL CONSTRAINT DF_AccessRules_CreatedAt DEFAULT (SYSUTCDATETIME()),
        CONSTRAINT UQ_AccessRules_Tenant_Position UNIQUE (TenantName, Position)
    );
GO

-- Billing units an operation costs under a plan: per request, per thousand input tokens, per
-- thousand output tokens and per vector.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND OBJECT_ID(N'dbo.OperationRates', N'U') IS NULL
    CREATE TABLE dbo.OperationRates (
        RatePlan NVARCHAR(64) NOT NULL,
        Operation NVARCHAR(64) NOT NULL,
        PerRequest FLOAT NOT NULL CONSTRAINT DF_OperationRates_PerRequest DEFAULT (0)
            CONSTRAINT CK_OperationRates_PerRequest CHECK (PerRequest >= 0),
        Per1kInputTokens FLOAT NOT NULL CONSTRAINT DF_OperationRates_Per1kInputTokens DEFAULT (0)
            CONSTRAINT CK_OperationRates_Per1kInputTokens CHECK (Per1kInputTokens >= 0),
        Per1kOutputTokens FLOAT NOT NULL CONSTRAINT DF_OperationRates_Per1kOutputTokens DEFAULT (0)
            CONSTRAINT CK_OperationRates_Per1kOutputTokens CHECK (Per1kOutputTokens >= 0),
        PerVector FLOAT NOT NULL CONSTRAINT DF_OperationRates_PerVector DEFAULT (0)
            CONSTRAINT CK_OperationRates_PerVector CHECK (PerVector >= 0),
        CONSTRAINT PK_OperationRates PRIMARY KEY CLUSTERED (RatePlan, Operation)
    );
GO

-- The standard plan's rates, the numbers the SQLite store seeds (MIGRATE_TO_3). Rows already
-- there (changed by put_rate before a failed run finished) are left as they are.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    INSERT INTO dbo.OperationRates (RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector)
    SELECT s.RatePlan, s.Operation, s.PerRequest, s.Per1kInputTokens, s.Per1kOutputTokens, s.PerVector
    FROM (
        VALUES
            (N'standard', N'embed', 0, 0.1, 0, 0),
            (N'standard', N'generate', 0, 0.5, 1.5, 0),
            (N'standard', N'ensemble', 0, 0.5, 1.5, 0.001),
            (N'standard', N'search', 0.01, 0.1, 0, 0.001),
            (N'standard', N'aggregate', 0.01, 0, 0, 0.0001)
    ) AS s (RatePlan, Operation, PerRequest, Per1kInputTokens, Per1kOutputTokens, PerVector)
    WHERE NOT EXISTS (
        SELECT 1 FROM dbo.OperationRates AS r WHERE r.RatePlan = s.RatePlan AND r.Operation = s.Operation
    );
GO

-- The ledger's columns for one row per answered request, in one ALTER so that a half-applied
-- script never leaves some without the others. Rows written before version 4 get no UsageKey,
-- ModelName '', no vectors, no billing units and status 200. ModelName lists an ensemble's members
-- comma-separated.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND COL_LENGTH(N'dbo.UsageLedger', N'UsageKey') IS NULL
    ALTER TABLE dbo.UsageLedger ADD
        UsageKey NVARCHAR(200) NULL,
        ModelName NVARCHAR(4000) NOT NULL CONSTRAINT DF_UsageLedger_ModelName DEFAULT (N''),
        Vectors BIGINT NOT NULL CONSTRAINT DF_UsageLedger_Vectors DEFAULT (0)
            CONSTRAINT CK_UsageLedger_Vectors CHECK (Vectors >= 0),
        BillingUnits FLOAT NOT NULL CONSTRAINT DF_UsageLedger_BillingUnits DEFAULT (0),
        StatusCode INT NOT NULL CONSTRAINT DF_UsageLedger_StatusCode DEFAULT (200);
GO

-- One row per UsageKey: insert_usage finds a retried write by it, and this index refuses a
-- duplicate that races past that check. Rows without a key (written before version 4) are not
-- in it.
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'dbo.UsageLedger') AND name = N'UQ_UsageLedger_UsageKey'
    )
    CREATE UNIQUE NONCLUSTERED INDEX UQ_UsageLedger_UsageKey ON dbo.UsageLedger (UsageKey)
    WHERE UsageKey IS NOT NULL;
GO

-- The ledger over time, all tenants (list_usage with a start time and no tenant).
IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    AND NOT EXISTS (
        SELECT 1 FROM sys.indexes
        WHERE object_id = OBJECT_ID(N'dbo.UsageLedger') AND name = N'IX_UsageLedger_RecordedAt'
    )
    CREATE NONCLUSTERED INDEX IX_UsageLedger_RecordedAt ON dbo.UsageLedger (RecordedAt);
GO

IF NOT EXISTS (SELECT 1 FROM dbo.SchemaVersion WHERE Version = 4)
    INSERT INTO dbo.SchemaVersion (Version, Description)
    VALUES (4, N'governance: tenants, API keys, access rules, operation rates, usage ledger billing columns');
GO

EXEC sys.sp_releaseapplock @Resource = N'hartonomous-schema', @LockOwner = N'Session';
GO
