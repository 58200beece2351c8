-- Hartonomous: let this database call the daemon (sql/procedures/) and use it as a native
-- embedding model. Run once per database after sql/schema/*.sql and sql/procedures/*.sql, with
-- `sqlcmd -b`, as a member of sysadmin (sp_configure) and db_owner. README.md, "Using it from SQL
-- Server", walks through it.
--
-- EDIT before running, everywhere they appear:
--   https://hartonomous-host:8443   the daemon's address: HTTPS only, a name its certificate
--                                   holds; the certificate must be trusted by this server's host
--   hartonomous-api-key             the daemon API key (bearer token) these calls carry
--   change-this-master-key-password the database master key's password (only if the database
--                                   has no master key yet)
-- The credential's name must be a URL prefix of every URL called with it
-- (sp_invoke_external_rest_endpoint's rule), so it is the daemon's base URL.

SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
GO

-- sp_invoke_external_rest_endpoint is off by default.
EXEC sp_configure 'external rest endpoint enabled', 1;
RECONFIGURE WITH OVERRIDE;
GO

-- A database scoped credential is encrypted by the database master key.
IF NOT EXISTS (SELECT 1 FROM sys.symmetric_keys WHERE name = N'##MS_DatabaseMasterKey##')
    CREATE MASTER KEY ENCRYPTION BY PASSWORD = 'change-this-master-key-password';
GO

-- The bearer token, sent as a header with every call to URLs under the daemon's base URL: paste
-- the key `hartonomous keys create --tenant sqlserver` printed (hk_ and 64 hex digits), and give
-- that tenant its rules (`hartonomous policy allow --tenant sqlserver --operation '*' --model '*'`).
IF NOT EXISTS (SELECT 1 FROM sys.database_scoped_credentials WHERE name = N'https://hartonomous-host:8443')
    CREATE DATABASE SCOPED CREDENTIAL [https://hartonomous-host:8443]
        WITH IDENTITY = 'HTTPEndpointHeaders', SECRET = '{"Authorization":"Bearer hk_paste-the-key-here"}';
GO

-- Where dbo.sp_CallDaemon sends its calls.
DELETE FROM dbo.DaemonEndpoint;
INSERT INTO dbo.DaemonEndpoint (EndpointId, BaseUrl, CredentialName, TimeoutSeconds)
VALUES (1, N'https://hartonomous-host:8443', N'https://hartonomous-host:8443', 120);
GO

-- Who may call: members of HartonomousCallers run the procedures (and, through them, the daemon).
IF DATABASE_PRINCIPAL_ID(N'HartonomousCallers') IS NULL
    CREATE ROLE HartonomousCallers;
GO
GRANT REFERENCES ON DATABASE SCOPED CREDENTIAL::[https://hartonomous-host:8443] TO HartonomousCallers;
GO
GRANT EXECUTE ANY EXTERNAL ENDPOINT TO HartonomousCallers;
GRANT EXECUTE ON OBJECT::dbo.sp_GenerateEmbedding TO HartonomousCallers;
GRANT EXECUTE ON OBJECT::dbo.sp_SemanticSearch TO HartonomousCallers;
GRANT EXECUTE ON OBJECT::dbo.sp_EnsembleInference TO HartonomousCallers;
GRANT EXECUTE ON OBJECT::dbo.sp_GenerateText TO HartonomousCallers;
GRANT EXECUTE ON OBJECT::dbo.sp_AggregateEmbeddings TO HartonomousCallers;
GO

-- The daemon as a native embedding model: SELECT AI_GENERATE_EMBEDDINGS(N'text' USE MODEL MiniLM).
-- It speaks OpenAI's embeddings contract at /v1/embeddings (FACTS.md).
IF NOT EXISTS (SELECT 1 FROM sys.external_models WHERE name = N'MiniLM')
    CREATE EXTERNAL MODEL MiniLM
    WITH (
        LOCATION = 'https://hartonomous-host:8443/v1/embeddings',
        API_FORMAT = 'OpenAI',
        MODEL_TYPE = EMBEDDINGS,
        MODEL = 'all-MiniLM-L6-v2',
        CREDENTIAL = [https://hartonomous-host:8443]
    );
GO
GRANT EXECUTE ON EXTERNAL MODEL::MiniLM TO HartonomousCallers;
GO
