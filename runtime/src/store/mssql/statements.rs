//! Every statement the SQL Server store sends, taken at compile time from `sql/queries/store.sql`
//! (the file `sql/check.sh` parse-checks), so the checked text is the text that runs.
//!
//! The file is a list of blocks, each starting at a line `-- name: snake_case`; a block runs to
//! the next such line (sql/README.md). [`Statement`] names a block and the number of `@P`
//! parameters the backend binds for it; the tests below hold every name to its block and every
//! count to the block's highest `@Pn`, so a renamed block or a parameter added on one side only
//! fails `cargo test`, not a production ingest.

use std::collections::HashMap;
use std::sync::OnceLock;

const SOURCE: &str = include_str!("../../../../sql/queries/store.sql");

/// A named block of `sql/queries/store.sql` and how many parameters it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statement {
    pub name: &'static str,
    pub params: usize,
}

impl Statement {
    /// The block's text, comments included, exactly as in the file.
    pub fn sql(self) -> &'static str {
        blocks().get(self.name).copied().unwrap_or_else(|| {
            panic!("statement {} is not in sql/queries/store.sql: this is a bug (the statements test catches it)", self.name)
        })
    }
}

macro_rules! statements {
    ($($konst:ident = $name:literal / $params:literal;)*) => {
        $(pub(crate) const $konst: Statement = Statement { name: $name, params: $params };)*
        /// Every statement the backend sends.
        #[cfg(test)]
        pub(crate) const ALL: &[Statement] = &[$($konst),*];
    };
}

statements! {
    // Plain batches (simple_query: no parameters, no sp_executesql).
    SESSION_OPTIONS = "session_options" / 0;
    DATABASE_OPTIONS = "database_options" / 0;
    BEGIN_TRANSACTION = "begin_transaction" / 0;
    COMMIT_TRANSACTION = "commit_transaction" / 0;
    ROLLBACK_TRANSACTION = "rollback_transaction" / 0;
    CREATE_TENSOR_ATOM_STAGE = "create_tensor_atom_stage" / 0;
    APPLY_TENSOR_ATOM_STAGE = "apply_tensor_atom_stage" / 0;
    // Models and layers.
    BEGIN_MODEL = "begin_model" / 11;
    INSERT_LAYER = "insert_layer" / 9;
    WRITE_LAYER_GEOMETRY_WKT = "write_layer_geometry_wkt" / 2;
    MARK_MODEL_READY = "mark_model_ready" / 3;
    LIST_MODELS = "list_models" / 0;
    MODEL_BY_ID = "model_by_id" / 1;
    FIND_MODELS = "find_models" / 2;
    LIST_LAYERS = "list_layers" / 1;
    LIST_MODEL_ATOMS = "list_model_atoms" / 1;
    READ_MODEL_MATERIAL = "read_model_material" / 1;
    FIND_REQUEST = "find_request" / 1;
    READ_LAYER_GEOMETRY = "read_layer_geometry" / 1;
    LIST_MODEL_GEOMETRIES = "list_model_geometries" / 1;
    RELEASE_MODEL_LAYERS = "release_model_layers" / 1;
    DELETE_MODEL_ROW = "delete_model_row" / 1;
    // Tensor atoms.
    FIND_TENSOR_ATOMS = "find_tensor_atoms" / 1;
    FETCH_TENSOR_ATOMS = "fetch_tensor_atoms" / 1;
    VERIFY_TENSOR_ATOMS = "verify_tensor_atoms" / 1;
    ATOM_USES = "atom_uses" / 1;
    // Content atoms and embeddings.
    UPSERT_CONTENT_ATOM = "upsert_content_atom" / 5;
    UPSERT_EMBEDDING = "upsert_embedding" / 6;
    NEAREST_EMBEDDINGS_COSINE = "nearest_embeddings_cosine" / 4;
    EMBEDDING_WATERMARK = "embedding_watermark" / 1;
    EMBEDDINGS_AFTER = "embeddings_after" / 3;
    EMBEDDINGS_OF_ATOMS = "embeddings_of_atoms" / 2;
    CONTENT_ATOMS = "content_atoms" / 1;
    // Lineage.
    INSERT_REQUEST = "insert_request" / 5;
    COMPLETE_REQUEST = "complete_request" / 4;
    READ_REQUEST = "read_request" / 1;
    INSERT_STEP = "insert_step" / 9;
    STEPS_OF_REQUEST = "steps_of_request" / 1;
    INSERT_USAGE = "insert_usage" / 12;
    USAGE_OF_REQUEST = "usage_of_request" / 1;
    UPSERT_GRAPH_NODE = "upsert_graph_node" / 2;
    INSERT_GRAPH_EDGE = "insert_graph_edge" / 7;
    EDGES_OF_REQUEST = "edges_of_request" / 1;
    // Governance.
    LIST_GOVERNANCE = "list_governance" / 0;
    UPSERT_TENANT = "upsert_tenant" / 4;
    INSERT_API_KEY = "insert_api_key" / 4;
    REVOKE_API_KEY = "revoke_api_key" / 1;
    INSERT_ACCESS_RULE = "insert_access_rule" / 4;
    DELETE_ACCESS_RULE = "delete_access_rule" / 1;
    UPSERT_OPERATION_RATE = "upsert_operation_rate" / 6;
    LIST_USAGE = "list_usage" / 3;
}

/// The blocks of `sql/queries/store.sql` by name, parsed once.
fn blocks() -> &'static HashMap<&'static str, &'static str> {
    static BLOCKS: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    BLOCKS.get_or_init(|| parse(SOURCE).into_iter().collect())
}

/// Splits a query file into `(name, text)` blocks; the text before the first `-- name:` line
/// (the file's header) belongs to no block. A block's text runs from its name line to the next
/// one, trailing blank lines trimmed.
fn parse(source: &str) -> Vec<(&str, &str)> {
    const MARK: &str = "-- name:";
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix(MARK) {
            starts.push((offset, rest.trim()));
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(start, name))| {
            let end = starts.get(i + 1).map_or(source.len(), |next| next.0);
            (name, source[start..end].trim_end())
        })
        .collect()
}

/// The highest `@Pn` in `sql` (0 when it has none): the parameters sp_executesql expects.
#[cfg(test)]
fn highest_parameter(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut highest = 0;
    for (i, _) in sql.match_indices("@P") {
        let digits: String = bytes[i + 2..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
        if let Ok(n) = digits.parse::<usize>() {
            highest = highest.max(n);
        }
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_exists_with_the_parameters_the_backend_binds() {
        let blocks = blocks();
        let mut bad = Vec::new();
        for st in ALL {
            match blocks.get(st.name) {
                None => bad.push(format!("{}: no such block in sql/queries/store.sql", st.name)),
                Some(sql) => {
                    let found = highest_parameter(sql);
                    if found != st.params {
                        bad.push(format!("{}: the block takes {found} parameters, the backend binds {}", st.name, st.params));
                    }
                }
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn plain_batches_take_no_parameters() {
        for st in [SESSION_OPTIONS, DATABASE_OPTIONS, CREATE_TENSOR_ATOM_STAGE, APPLY_TENSOR_ATOM_STAGE] {
            assert_eq!(highest_parameter(st.sql()), 0, "{}", st.name);
            assert!(!st.sql().lines().any(|l| l.trim() == "GO"), "{}", st.name);
        }
    }

    #[test]
    fn blocks_split_at_name_lines_and_ignore_the_header() {
        let text = "-- header\n\n-- name: one\n-- says one\nSELECT @P1;\n\n-- name: two\nSELECT 2;\n";
        assert_eq!(parse(text), vec![("one", "-- name: one\n-- says one\nSELECT @P1;"), ("two", "-- name: two\nSELECT 2;")]);
        assert_eq!(highest_parameter("SELECT @P1, @P12, @Prefix"), 12);
        assert_eq!(highest_parameter("SELECT 1"), 0);
    }

    #[test]
    fn names_are_unique() {
        let names: Vec<&str> = parse(SOURCE).into_iter().map(|(n, _)| n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate block names in sql/queries/store.sql");
    }
}
