-- Hartonomous: the T-SQL front door to the daemon.
--
-- Each procedure calls the daemon over HTTPS through sys.sp_invoke_external_rest_endpoint
-- (dbo.sp_CallDaemon, the one place that does), checks the return value and the HTTP status,
-- THROWs the daemon's own error message (OpenAI's `error.message`, which names the field to fix)
-- on failure, and reads the endpoint's JSON from `$.result` of the response, which SQL Server
-- wraps as {"response": {"status": {"http": {"code", "description"}}, "headers": {...}},
-- "result": <the endpoint's JSON>} (FACTS.md). The paths read here are checked against real
-- responses wrapped that way by runtime/tests/sql_procedures.rs.
--
-- Apply after the schema (sql/schema/*.sql) and configure the endpoint with
-- sql/setup/001_daemon_access.sql. Idempotent: CREATE OR ALTER, tables only when missing.

SET ANSI_NULLS ON;
SET QUOTED_IDENTIFIER ON;
SET XACT_ABORT ON;
GO

-- Where the daemon is (one row, written by sql/setup/001_daemon_access.sql): its base URL, the
-- DATABASE SCOPED CREDENTIAL that carries its bearer token (named by a URL prefix of the base URL,
-- as sp_invoke_external_rest_endpoint requires), and the call timeout.
IF OBJECT_ID(N'dbo.DaemonEndpoint', N'U') IS NULL
    CREATE TABLE dbo.DaemonEndpoint (
        EndpointId TINYINT NOT NULL
            CONSTRAINT PK_DaemonEndpoint PRIMARY KEY
            CONSTRAINT CK_DaemonEndpoint_One CHECK (EndpointId = 1),
        BaseUrl NVARCHAR(400) NOT NULL
            CONSTRAINT CK_DaemonEndpoint_Https CHECK (BaseUrl LIKE N'https://%'),
        CredentialName NVARCHAR(400) NULL,
        TimeoutSeconds INT NOT NULL
            CONSTRAINT DF_DaemonEndpoint_Timeout DEFAULT (120)
            CONSTRAINT CK_DaemonEndpoint_Timeout CHECK (TimeoutSeconds BETWEEN 1 AND 230)
    );
GO

-- Calls the daemon: POST @payload (JSON text) to the base URL + @path; @response is SQL Server's
-- wrapped response. Errors: 50100 not configured, 50101 the daemon refused or failed (its message
-- and HTTP status in the text), 50102 no answer.
CREATE OR ALTER PROCEDURE dbo.sp_CallDaemon
    @path NVARCHAR(200),
    @payload NVARCHAR(MAX),
    @response NVARCHAR(MAX) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @base NVARCHAR(400);
    DECLARE @credential NVARCHAR(400);
    DECLARE @timeout INT;
    SELECT @base = BaseUrl, @credential = CredentialName, @timeout = TimeoutSeconds
    FROM dbo.DaemonEndpoint
    WHERE EndpointId = 1;
    IF @base IS NULL
        THROW 50100, N'the daemon endpoint is not configured: run sql/setup/001_daemon_access.sql', 1;
    DECLARE @url NVARCHAR(4000) = CONCAT(@base, @path);
    DECLARE @rc INT;
    IF @credential IS NULL
        EXEC @rc = sys.sp_invoke_external_rest_endpoint
            @url = @url, @method = N'POST', @payload = @payload, @timeout = @timeout,
            @response = @response OUTPUT;
    ELSE
        EXEC @rc = sys.sp_invoke_external_rest_endpoint
            @url = @url, @method = N'POST', @payload = @payload, @credential = @credential,
            @timeout = @timeout, @response = @response OUTPUT;
    IF @response IS NULL OR ISJSON(@response) <> 1
    BEGIN
        DECLARE @nothing NVARCHAR(2048) = CONCAT(N'no answer from the daemon at ', @url, N' (return value ', @rc, N')');
        THROW 50102, @nothing, 1;
    END;
    DECLARE @status INT = TRY_CAST(JSON_VALUE(@response, N'$.response.status.http.code') AS INT);
    IF @rc <> 0 OR @status IS NULL OR @status NOT BETWEEN 200 AND 299
    BEGIN
        DECLARE @message NVARCHAR(2048) = CONCAT(
            N'the daemon answered HTTP ', COALESCE(CAST(@status AS NVARCHAR(10)), N'?'), N' to ', @path, N': ',
            COALESCE(JSON_VALUE(@response, N'$.result.error.message'), N'(no error message)'),
            COALESCE(N' [field: ' + JSON_VALUE(@response, N'$.result.error.param') + N']', N'')
        );
        THROW 50101, @message, 1;
    END;
END;
GO

-- The embedding of @text by @model (a BERT-family model the daemon serves), zero-padded to
-- VECTOR(1998) as dbo.AtomEmbeddings stores vectors, with its true @dimension.
CREATE OR ALTER PROCEDURE dbo.sp_GenerateEmbedding
    @model NVARCHAR(200),
    @text NVARCHAR(MAX),
    @embedding VECTOR(1998) OUTPUT,
    @dimension INT = NULL OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @payload NVARCHAR(MAX) = CONCAT(
        N'{"model":"', STRING_ESCAPE(@model, 'json'), N'","input":"', STRING_ESCAPE(@text, 'json'), N'"}'
    );
    DECLARE @response NVARCHAR(MAX);
    EXEC dbo.sp_CallDaemon @path = N'/v1/embeddings', @payload = @payload, @response = @response OUTPUT;
    DECLARE @vector NVARCHAR(MAX) = JSON_QUERY(@response, N'$.result.data[0].embedding');
    SET @dimension = (SELECT COUNT(*) FROM OPENJSON(@vector));
    IF @dimension NOT BETWEEN 1 AND 1998
    BEGIN
        DECLARE @message NVARCHAR(2048) = CONCAT(N'the daemon returned an embedding of ', @dimension, N' dimensions; VECTOR(1998) holds 1 to 1998');
        THROW 50103, @message, 1;
    END;
    -- Zero padding leaves cosine, dot and L2 unchanged (FACTS.md).
    SET @embedding = CAST(
        CONCAT(LEFT(@vector, LEN(@vector) - 1), REPLICATE(CAST(N',0' AS NVARCHAR(MAX)), 1998 - @dimension), N']')
        AS VECTOR(1998)
    );
END;
GO

-- The @k stored embeddings of @model nearest @query (a text, embedded by @model), as a result set
-- best first: Rank, AtomId, Score, AtomHash, Modality, Text, PayloadBytes.
CREATE OR ALTER PROCEDURE dbo.sp_SemanticSearch
    @query NVARCHAR(MAX),
    @model NVARCHAR(200),
    @k INT = 10,
    @metric NVARCHAR(10) = N'cosine'
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @payload NVARCHAR(MAX) = CONCAT(
        N'{"model":"', STRING_ESCAPE(@model, 'json'), N'","query":"', STRING_ESCAPE(@query, 'json'),
        N'","k":', @k, N',"metric":"', STRING_ESCAPE(@metric, 'json'), N'"}'
    );
    DECLARE @response NVARCHAR(MAX);
    EXEC dbo.sp_CallDaemon @path = N'/v1/search', @payload = @payload, @response = @response OUTPUT;
    -- The array's own order is the ranking: OPENJSON's [key] is the position. Column paths are
    -- plain (not N'') literals: sqlfluff's tsql dialect parses OPENJSON's WITH clause only so,
    -- and JSON paths are ASCII.
    SELECT
        CAST(j.[key] AS INT) + 1 AS Rank,
        r.AtomId, r.Score, r.AtomHash, r.Modality, r.Text, r.PayloadBytes
    FROM OPENJSON(@response, N'$.result.data[0].results') AS j
    CROSS APPLY OPENJSON(j.[value])
        WITH (
            AtomId BIGINT '$.atom_id',
            Score FLOAT '$.score',
            AtomHash CHAR(64) '$.atom_hash',
            Modality NVARCHAR(32) '$.modality',
            Text NVARCHAR(MAX) '$.text',
            PayloadBytes BIGINT '$.payload_bytes'
        ) AS r
    ORDER BY CAST(j.[key] AS INT);
END;
GO

-- An ensemble of @models (JSON: [{"model": NAME, "weight": W}, ...]) on @input: @output
-- 'embedding' gives the averaged, renormalised vector as JSON text in @result; 'next_token' the
-- chosen token's text; 'completion' the completion's text.
CREATE OR ALTER PROCEDURE dbo.sp_EnsembleInference
    @models NVARCHAR(MAX),
    @input NVARCHAR(MAX),
    @output NVARCHAR(20) = N'embedding',
    @result NVARCHAR(MAX) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    IF ISJSON(@models) <> 1
        THROW 50104, N'@models must be a JSON array of {"model": NAME, "weight": W}', 1;
    DECLARE @payload NVARCHAR(MAX) = CONCAT(
        N'{"models":', @models, N',"input":"', STRING_ESCAPE(@input, 'json'),
        N'","output":"', STRING_ESCAPE(@output, 'json'), N'"}'
    );
    DECLARE @response NVARCHAR(MAX);
    EXEC dbo.sp_CallDaemon @path = N'/v1/ensemble', @payload = @payload, @response = @response OUTPUT;
    -- Texts are read through OPENJSON ... WITH (NVARCHAR(MAX)): JSON_VALUE returns at most
    -- 4,000 characters and NULL beyond, silently.
    IF @output = N'embedding'
        SET @result = JSON_QUERY(@response, N'$.result.data[0].embedding');
    ELSE IF @output = N'next_token'
        SELECT @result = t.Text FROM OPENJSON(@response, N'$.result.token') WITH (Text NVARCHAR(MAX) '$.text') AS t;
    ELSE
        SELECT @result = t.Text FROM OPENJSON(@response, N'$.result') WITH (Text NVARCHAR(MAX) '$.text') AS t;
END;
GO

-- A completion of @prompt by @model (a Llama-family model the daemon serves): @text, and why it
-- ended (@finish_reason 'stop' or 'length'). @temperature 0 is greedy.
CREATE OR ALTER PROCEDURE dbo.sp_GenerateText
    @model NVARCHAR(200),
    @prompt NVARCHAR(MAX),
    @max_tokens INT = 64,
    @temperature FLOAT = 0,
    @text NVARCHAR(MAX) OUTPUT,
    @finish_reason NVARCHAR(20) = NULL OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @payload NVARCHAR(MAX) = CONCAT(
        N'{"model":"', STRING_ESCAPE(@model, 'json'), N'","prompt":"', STRING_ESCAPE(@prompt, 'json'),
        N'","max_tokens":', @max_tokens, N',"temperature":', CONVERT(NVARCHAR(40), @temperature, 3), N'}'
    );
    DECLARE @response NVARCHAR(MAX);
    EXEC dbo.sp_CallDaemon @path = N'/v1/completions', @payload = @payload, @response = @response OUTPUT;
    -- OPENJSON ... WITH (NVARCHAR(MAX)): JSON_VALUE would return NULL past 4,000 characters.
    SELECT @text = c.Text, @finish_reason = c.FinishReason
    FROM OPENJSON(@response, N'$.result.choices[0]')
        WITH (Text NVARCHAR(MAX) '$.text', FinishReason NVARCHAR(20) '$.finish_reason') AS c;
END;
GO

-- An aggregate (@operation: sum, average, median, std_dev, average_pairwise_cosine) of @model's
-- stored embeddings of the atoms in @atom_ids (a JSON array of AtomIds): the vector as JSON text,
-- or the number for average_pairwise_cosine, in @result.
CREATE OR ALTER PROCEDURE dbo.sp_AggregateEmbeddings
    @operation NVARCHAR(40),
    @model NVARCHAR(200),
    @atom_ids NVARCHAR(MAX),
    @result NVARCHAR(MAX) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    IF ISJSON(@atom_ids) <> 1
        THROW 50105, N'@atom_ids must be a JSON array of AtomIds', 1;
    DECLARE @payload NVARCHAR(MAX) = CONCAT(
        N'{"operation":"', STRING_ESCAPE(@operation, 'json'), N'","model":"', STRING_ESCAPE(@model, 'json'),
        N'","atom_ids":', @atom_ids, N'}'
    );
    DECLARE @response NVARCHAR(MAX);
    EXEC dbo.sp_CallDaemon @path = N'/v1/aggregate', @payload = @payload, @response = @response OUTPUT;
    SET @result = COALESCE(JSON_QUERY(@response, N'$.result.result'), JSON_VALUE(@response, N'$.result.result'));
END;
GO
