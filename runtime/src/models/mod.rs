//! Model architectures that run on the kernels, one file each. A model is built from what the
//! store holds (its configuration, tokenizer and layers); its weights come through the
//! [`Pager`](crate::pager::Pager) by dotted tensor name, never from disk.

pub mod bert;
pub mod chat_template;
pub mod gguf_tokenizer;
pub mod llama;
pub mod sampling;

use std::collections::HashMap;

use crate::pager::PagerError;
use crate::store::LayerRow;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {model}: {what}")]
    Config { model: String, what: String },

    #[error("model {model}: tokenizer: {what}")]
    Tokenizer { model: String, what: String },

    /// The chat template does not compile, or refused to render a conversation
    /// (`raise_exception`, an unknown role, a missing field).
    #[error("model {model}: chat template: {what}")]
    ChatTemplate { model: String, what: String },

    /// The request's input, not the model, is at fault.
    #[error("{what}")]
    Input { what: String },

    /// Boxed: keeps every model `Result` small.
    #[error(transparent)]
    Pager(Box<PagerError>),

    #[error("model {model}: GPU: {source}")]
    Kernel {
        model: String,
        #[source]
        source: hartonomous_kernels::KernelError,
    },
}

impl From<PagerError> for ModelError {
    fn from(e: PagerError) -> Self {
        ModelError::Pager(Box::new(e))
    }
}

/// A model's layers by tensor name, with an optional prefix some checkpoints add (`bert.`).
#[derive(Debug, Clone)]
pub struct NamedLayers {
    model: String,
    prefix: String,
    by_name: HashMap<String, LayerRow>,
}

impl NamedLayers {
    /// `prefix` is used when the checkpoint's names carry it (e.g. `bert.embeddings...`).
    pub fn new(model: &str, layers: Vec<LayerRow>, prefix: &str) -> Self {
        let has_prefix = layers.iter().any(|l| l.tensor_name.starts_with(prefix));
        NamedLayers {
            model: model.to_string(),
            prefix: if has_prefix { prefix.to_string() } else { String::new() },
            by_name: layers.into_iter().map(|l| (l.tensor_name.clone(), l)).collect(),
        }
    }

    /// The layer named `name` (without the prefix), or an error naming what is missing.
    pub fn get(&self, name: &str) -> Result<&LayerRow, ModelError> {
        let full = format!("{}{name}", self.prefix);
        self.by_name.get(&full).ok_or_else(|| ModelError::Config {
            model: self.model.clone(),
            what: format!("tensor `{full}` is not among its {} layers", self.by_name.len()),
        })
    }

    /// Checks that every name resolves and that its shape is as expected.
    pub fn expect_shape(&self, name: &str, shape: &[u64]) -> Result<(), ModelError> {
        let layer = self.get(name)?;
        if layer.shape != shape {
            return Err(ModelError::Config {
                model: self.model.clone(),
                what: format!("tensor `{}` has shape {:?}, the configuration implies {shape:?}", layer.tensor_name, layer.shape),
            });
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &LayerRow> {
        self.by_name.values()
    }
}
