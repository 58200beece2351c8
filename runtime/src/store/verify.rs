//! What `verify` checks, independent of the database: each backend streams its rows through
//! these functions, so SQLite and SQL Server find the same damage in the same words.
//!
//! The definitions are the loader's (`hartonomous_loader::atom`): an atom's id is SHA-256 of its
//! encoding tag, a zero byte and its payload; a layer's tensor root covers its dtype, shape and
//! atom ids in order; a model's weights root covers its (tensor name, tensor root) pairs.

use std::collections::HashMap;

use hartonomous_loader::atom::{atom_id, tensor_root, weights_root};
use hartonomous_loader::geometry::decode_layer;
use hartonomous_loader::{DType, Hash256};

use super::{Damage, LayerRow, ModelRow, ModelStatus};

/// One stored atom as verify reads it.
pub(crate) struct AtomCheck<'a> {
    pub hash: Hash256,
    pub encoding: &'a str,
    pub recorded_len: i64,
    pub recorded_count: i64,
    /// Coefficient rows that name the atom.
    pub uses: u64,
    pub payload: &'a [u8],
}

/// Damage to one atom: payload against id and length, reference count against uses. Damage
/// that a user of the atom would feel comes back with an empty `used_by`, for the backend to
/// fill in (it costs a query, needed only when something is wrong).
pub(crate) fn check_atom(atom: &AtomCheck<'_>) -> Vec<Damage> {
    let mut damage = Vec::new();
    let actual_len = atom.payload.len() as u64;
    if atom.recorded_len < 0 || atom.recorded_len as u64 != actual_len {
        damage.push(Damage::AtomLength {
            atom: atom.hash,
            recorded: atom.recorded_len.max(0) as u64,
            actual: actual_len,
            used_by: Vec::new(),
        });
    }
    match DType::from_tag(atom.encoding) {
        None => damage.push(Damage::AtomEncoding {
            atom: atom.hash,
            encoding: atom.encoding.to_string(),
            used_by: Vec::new(),
        }),
        Some(dtype) => {
            let actual = atom_id(dtype, atom.payload);
            if actual != atom.hash {
                damage.push(Damage::AtomHash {
                    atom: atom.hash,
                    encoding: atom.encoding.to_string(),
                    actual,
                    used_by: Vec::new(),
                });
            }
        }
    }
    if atom.uses == 0 {
        damage.push(Damage::OrphanAtom {
            atom: atom.hash,
            bytes: actual_len,
            recorded_count: atom.recorded_count,
        });
    } else if atom.recorded_count < 0 || atom.recorded_count as u64 != atom.uses {
        damage.push(Damage::ReferenceCount {
            atom: atom.hash,
            recorded: atom.recorded_count,
            actual: atom.uses,
        });
    }
    damage
}

impl Damage {
    /// The list of places that use the damaged atom, for the kinds that report one.
    pub(crate) fn used_by_mut(&mut self) -> Option<&mut Vec<super::AtomUse>> {
        match self {
            Damage::AtomHash { used_by, .. } | Damage::AtomLength { used_by, .. } | Damage::AtomEncoding { used_by, .. } => {
                Some(used_by)
            }
            _ => None,
        }
    }
}

/// Damage to one layer: its atom list against its tensor root, byte length and shape.
pub(crate) fn check_layer(model: &str, layer: &LayerRow) -> Vec<Damage> {
    let mut problems = Vec::new();
    let elements = layer.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if elements != Some(layer.parameter_count) {
        problems.push(format!(
            "ParameterCount {} but shape {:?} has {} elements",
            layer.parameter_count,
            layer.shape,
            elements.map(|e| e.to_string()).unwrap_or_else(|| "too many".into())
        ));
    }
    for (expected, atom) in layer.atoms.iter().enumerate() {
        if atom.ordinal != expected as u64 {
            problems.push(format!("atom ordinals skip from {} to {}", expected, atom.ordinal));
            break;
        }
    }
    if let Some(atom) = layer.atoms.iter().find(|a| a.coefficient != 1.0) {
        problems.push(format!(
            "atom {} has coefficient {} where plain storage has 1.0",
            atom.ordinal, atom.coefficient
        ));
    }
    let atom_bytes: u64 = layer.atoms.iter().map(|a| a.byte_length).sum();
    if atom_bytes != layer.byte_length {
        problems.push(format!(
            "its {} atoms hold {atom_bytes} bytes, not its ByteLength {}",
            layer.atoms.len(),
            layer.byte_length
        ));
    }
    match DType::from_tag(&layer.dtype) {
        None => problems.push(format!("unknown dtype {:?}", layer.dtype)),
        Some(dtype) => {
            if dtype.bytes_for(layer.parameter_count) != Some(layer.byte_length) {
                problems.push(format!(
                    "{} elements of {dtype} do not take ByteLength {} bytes",
                    layer.parameter_count, layer.byte_length
                ));
            }
            let computed = tensor_root(dtype, &layer.shape, layer.atoms.iter().map(|a| &a.atom));
            if computed != layer.tensor_root {
                problems.push(format!(
                    "its {} atoms reassemble tensor root {computed}, not the recorded {}",
                    layer.atoms.len(),
                    layer.tensor_root
                ));
            }
        }
    }
    problems
        .into_iter()
        .map(|problem| Damage::Layer {
            model: model.to_string(),
            tensor: layer.tensor_name.clone(),
            problem,
        })
        .collect()
}

/// Damage to a model as a whole: status, counts, atom bytes and weights root.
pub(crate) fn check_model(model: &ModelRow, layers: &[LayerRow]) -> Vec<Damage> {
    let mut problems = Vec::new();
    if model.status != ModelStatus::Ready {
        problems.push(format!(
            "status is '{}': an ingest was interrupted; ingest it again or remove it with `hartonomous rm {}`",
            model.status.as_str(),
            model.label()
        ));
    }
    if layers.len() as u64 != model.tensor_count {
        problems.push(format!("TensorCount {} but {} layers are stored", model.tensor_count, layers.len()));
    }
    let parameters: u64 = layers.iter().map(|l| l.parameter_count).sum();
    if parameters != model.parameter_count {
        problems.push(format!("ParameterCount {} but its layers hold {parameters}", model.parameter_count));
    }
    if model.status == ModelStatus::Ready {
        let distinct: HashMap<Hash256, u64> =
            layers.iter().flat_map(|l| &l.atoms).map(|a| (a.atom, a.byte_length)).collect();
        let atom_bytes: u64 = distinct.values().sum();
        if atom_bytes != model.atom_bytes {
            problems.push(format!("AtomBytes {} but its distinct atoms hold {atom_bytes} bytes", model.atom_bytes));
        }
        let computed = weights_root(layers.iter().map(|l| (l.tensor_name.as_str(), l.tensor_root)));
        if model.source_file_hash.is_none() {
            problems.push("no source file hash recorded".into());
        }
        match model.weights_root {
            Some(recorded) if recorded == computed => {}
            Some(recorded) => problems.push(format!("its layers give weights root {computed}, not the recorded {recorded}")),
            None => problems.push("no weights root recorded".into()),
        }
    }
    problems
        .into_iter()
        .map(|problem| Damage::Model {
            model: model.label(),
            problem,
        })
        .collect()
}

/// Damage to a layer's geometry: it must decode as the layer's `LINESTRING ZM`, one point per
/// element in order.
pub(crate) fn check_geometry(model: &str, tensor: &str, parameter_count: u64, wkb: &[u8]) -> Option<Damage> {
    let problem = match decode_layer(wkb) {
        Err(e) => format!("WeightsGeometry does not decode: {e}"),
        Ok(layer) if layer.values.len() as u64 != parameter_count => {
            format!("WeightsGeometry has {} points for {parameter_count} elements", layer.values.len())
        }
        Ok(_) => return None,
    };
    Some(Damage::Layer {
        model: model.to_string(),
        tensor: tensor.to_string(),
        problem,
    })
}
