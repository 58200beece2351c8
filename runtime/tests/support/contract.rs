//! The `Store` contract: what every implementation must do, written once over `&dyn Store` and
//! run against each (`runtime/tests/store_contract.rs`). Synthetic models of a few tiny atoms,
//! with names unique to the run, so the suite can share a database with other data (a SQL Server
//! test database) and cleans up after itself.

use std::time::{SystemTime, UNIX_EPOCH};

use hartonomous_loader::atom::{atom_id, tensor_root, weights_root, SpatialSignature};
use hartonomous_loader::{DType, Hash256};
use hartonomous_runtime::store::*;

/// A name no other run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    format!("contract-{prefix}-{}-{nanos}", std::process::id())
}

/// An F32 atom holding `values`.
pub fn atom(values: &[f32]) -> AtomRecord {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    AtomRecord {
        hash: atom_id(DType::F32, &payload),
        encoding: DType::F32,
        payload,
        signature: SpatialSignature::of(values),
    }
}

/// A model whose layers are F32 vectors made of the given atoms in order.
pub struct Synthetic {
    pub model: NewModel,
    pub atoms: Vec<AtomRecord>,
    pub layers: Vec<LayerRecord>,
    pub root: Hash256,
}

pub fn synthetic(name: &str, version: &str, layers: &[(&str, Vec<AtomRecord>)]) -> Synthetic {
    let mut atoms = Vec::new();
    let mut records = Vec::new();
    for (ordinal, (tensor, layer_atoms)) in layers.iter().enumerate() {
        let bytes: u64 = layer_atoms.iter().map(|a| a.payload.len() as u64).sum();
        let shape = vec![bytes / 4];
        let ids: Vec<Hash256> = layer_atoms.iter().map(|a| a.hash).collect();
        records.push(LayerRecord {
            ordinal: ordinal as u32,
            tensor_name: tensor.to_string(),
            dtype: DType::F32,
            tensor_root: tensor_root(DType::F32, &shape, &ids),
            shape,
            byte_length: bytes,
            atoms: ids,
            geometry: None,
        });
        atoms.extend(layer_atoms.iter().cloned());
    }
    let root = weights_root(records.iter().map(|l| (l.tensor_name.as_str(), l.tensor_root)));
    let parameters = records.iter().map(|l| l.shape[0]).sum();
    Synthetic {
        model: NewModel {
            name: name.into(),
            version: version.into(),
            architecture: "test".into(),
            format: "synthetic".into(),
            config_json: r#"{"test":true}"#.into(),
            tokenizer_kind: "none".into(),
            tokenizer_material: None,
            parameter_count: parameters,
            tensor_count: records.len() as u64,
        },
        atoms,
        layers: records,
        root,
    }
}

/// The seal of a synthetic model (its file hash is made up).
pub fn seal(m: &Synthetic) -> ModelSeal {
    ModelSeal { weights_root: m.root, source_file_hash: Hash256([7; 32]) }
}

pub async fn writer(store: &dyn Store, model: &NewModel) -> Box<dyn ModelWriter> {
    match store.begin_model(model).await.expect("begin_model") {
        BeginModel::Writer(w) => w,
        BeginModel::Exists(row) => panic!("{} unexpectedly exists", row.label()),
    }
}

/// Writes and commits a synthetic model, returning the put outcome and the row.
pub async fn store_model(store: &dyn Store, m: &Synthetic) -> (PutAtomsOutcome, ModelRow) {
    let mut w = writer(store, &m.model).await;
    let outcome = w.put_atoms(m.atoms.clone()).await.expect("put_atoms");
    w.put_layers(m.layers.clone()).await.expect("put_layers");
    let row = w.commit(seal(m)).await.expect("commit");
    (outcome, row)
}

#[track_caller]
fn assert_clean(report: &VerifyReport) {
    assert!(report.is_clean(), "verify found damage: {:#?}", report.damage);
}

async fn counts(store: &dyn Store, atoms: &[&AtomRecord]) -> Vec<Option<u64>> {
    let hashes: Vec<Hash256> = atoms.iter().map(|a| a.hash).collect();
    store.reference_counts(&hashes).await.expect("reference_counts")
}

/// A model goes in and comes back out exactly: rows, layers in order, atom lists, geometry,
/// reference counts per use (an atom used twice in a layer counts twice).
pub async fn model_round_trip(store: &dyn Store) {
    let (a, b, c) = (atom(&[1.0, 2.0]), atom(&[3.0, -4.0]), atom(&[0.5, 0.25, 0.125]));
    let name = unique("round-trip");
    let mut m = synthetic(&name, "1", &[("w", vec![a.clone(), b.clone(), a.clone()]), ("bias", vec![c.clone()])]);
    let wkb = hartonomous_loader::geometry::encode_linestring_zm(&[
        hartonomous_loader::geometry::PointZm { x: 0.0, y: 0.5, z: 1.0, m: 1.0 },
        hartonomous_loader::geometry::PointZm { x: 1.0, y: 0.25, z: 0.5, m: 1.0 },
        hartonomous_loader::geometry::PointZm { x: 2.0, y: 0.125, z: 0.25, m: 1.0 },
    ])
    .expect("wkb");
    m.layers[1].geometry = Some(wkb.clone());

    let (outcome, row) = store_model(store, &m).await;
    // Four atom records, three distinct: the repeat of `a` in the same batch is reused.
    assert_eq!(outcome, PutAtomsOutcome { new: 3, reused: 1, bytes_written: 8 + 8 + 12 });
    assert_eq!(row.name, name);
    assert_eq!(row.status, ModelStatus::Ready);
    assert_eq!(row.weights_root, Some(m.root));
    assert_eq!(row.source_file_hash, Some(Hash256([7; 32])));
    assert_eq!(row.tensor_count, 2);
    assert_eq!(row.parameter_count, 6 + 3);
    assert_eq!(row.atom_bytes, 28, "distinct atom bytes");

    assert_eq!(store.model(&name, None).await.expect("model"), Some(row.clone()));
    assert_eq!(store.model(&name, Some("1")).await.expect("model"), Some(row.clone()));
    assert_eq!(store.model(&name, Some("2")).await.expect("model"), None);
    assert!(store.list_models().await.expect("list").contains(&row));
    let material = store.model_material(row.id).await.expect("material").expect("present");
    assert_eq!(
        (material.config_json.as_str(), material.tokenizer_kind.as_str(), material.tokenizer_material.as_deref()),
        (m.model.config_json.as_str(), m.model.tokenizer_kind.as_str(), m.model.tokenizer_material.as_deref())
    );
    assert_eq!(store.model_material(ModelId(i64::MAX)).await.expect("material"), None);

    let layers = store.layers(row.id).await.expect("layers");
    assert_eq!(layers.len(), 2);
    assert_eq!((layers[0].ordinal, layers[0].tensor_name.as_str(), layers[0].dtype.as_str()), (0, "w", "F32"));
    assert_eq!(layers[0].shape, vec![6]);
    assert_eq!(layers[0].byte_length, 24);
    assert_eq!(layers[0].tensor_root, m.layers[0].tensor_root);
    let listed: Vec<(u64, Hash256, u64, f64)> =
        layers[0].atoms.iter().map(|x| (x.ordinal, x.atom, x.byte_length, x.coefficient)).collect();
    assert_eq!(listed, vec![(0, a.hash, 8, 1.0), (1, b.hash, 8, 1.0), (2, a.hash, 8, 1.0)]);
    assert!(!layers[0].has_geometry && layers[1].has_geometry);
    assert_eq!(store.layer_geometry(layers[1].id).await.expect("geometry"), Some(wkb));
    assert_eq!(store.layer_geometry(layers[0].id).await.expect("geometry"), None);

    assert_eq!(counts(store, &[&a, &b, &c]).await, vec![Some(2), Some(1), Some(1)]);
    assert_clean(&store.verify(Some(row.id)).await.expect("verify"));

    let removed = store.remove_model(&name, Some("1")).await.expect("rm");
    assert_eq!((removed.layers, removed.atoms_freed, removed.bytes_freed, removed.atoms_kept), (2, 3, 28, 0));
    assert_eq!(counts(store, &[&a, &b, &c]).await, vec![None, None, None]);
}

/// Atoms shared by two models are stored once and counted per use; removing one model frees
/// exactly the atoms only it used.
pub async fn dedup_and_remove(store: &dyn Store) {
    let (shared, only1, only2) = (atom(&[10.0, 11.0]), atom(&[12.0, 13.0]), atom(&[14.0, 15.0]));
    let (n1, n2) = (unique("dedup-a"), unique("dedup-b"));
    let m1 = synthetic(&n1, "1", &[("x", vec![shared.clone(), only1.clone()])]);
    let m2 = synthetic(&n2, "1", &[("x", vec![shared.clone()]), ("y", vec![only2.clone(), shared.clone()])]);
    let (o1, r1) = store_model(store, &m1).await;
    assert_eq!(o1, PutAtomsOutcome { new: 2, reused: 0, bytes_written: 16 });
    let (o2, r2) = store_model(store, &m2).await;
    assert_eq!(o2, PutAtomsOutcome { new: 1, reused: 2, bytes_written: 8 });
    assert_eq!(counts(store, &[&shared, &only1, &only2]).await, vec![Some(3), Some(1), Some(1)]);

    let removed = store.remove_model(&n1, None).await.expect("rm");
    assert_eq!((removed.atoms_freed, removed.bytes_freed, removed.atoms_kept), (1, 8, 1));
    assert_eq!(counts(store, &[&shared, &only1, &only2]).await, vec![Some(2), None, Some(1)]);
    assert_eq!(store.model(&n1, None).await.expect("model"), None);
    assert_clean(&store.verify(Some(r2.id)).await.expect("verify"));
    let fetched = store.fetch_atoms(&[shared.hash, only2.hash]).await.expect("fetch");
    assert_eq!(fetched[0].payload, shared.payload);

    let removed = store.remove_model(&n2, Some("1")).await.expect("rm");
    assert_eq!((removed.atoms_freed, removed.bytes_freed, removed.atoms_kept), (2, 16, 0));
    assert_eq!(counts(store, &[&shared, &only1, &only2]).await, vec![None, None, None]);
    let _ = r1;
}

/// A writer that never commits leaves nothing behind: no model, no new atom, no changed count.
/// Readers are checked while the writer is open too: they must see the last committed state
/// without waiting (WAL on SQLite; on SQL Server this needs `READ_COMMITTED_SNAPSHOT ON`, or the
/// reads would block on the writer's row locks).
pub async fn uncommitted_writes_are_invisible(store: &dyn Store) {
    let (shared, fresh) = (atom(&[20.0, 21.0]), atom(&[22.0, 23.0]));
    let base = synthetic(&unique("base"), "1", &[("x", vec![shared.clone()])]);
    store_model(store, &base).await;
    let name = unique("uncommitted");
    let m = synthetic(&name, "1", &[("x", vec![shared.clone(), fresh.clone()])]);

    for how in ["drop", "abort", "commit with a wrong root", "commit before every layer"] {
        let mut w = writer(store, &m.model).await;
        w.put_atoms(m.atoms.clone()).await.expect("put_atoms");
        if how != "commit before every layer" {
            w.put_layers(m.layers.clone()).await.expect("put_layers");
        }
        // Readers see nothing while the writer is open.
        assert_eq!(store.model(&name, None).await.expect("model"), None, "{how}");
        assert_eq!(counts(store, &[&shared, &fresh]).await, vec![Some(1), None], "{how}: while open");
        match how {
            "drop" => drop(w),
            "abort" => w.abort().await.expect("abort"),
            "commit with a wrong root" => {
                assert!(w.commit(ModelSeal { weights_root: Hash256([0; 32]), ..seal(&m) }).await.is_err())
            }
            _ => assert!(w.commit(seal(&m)).await.is_err()),
        }
        assert_eq!(store.model(&name, None).await.expect("model"), None, "{how}");
        assert!(!store.list_models().await.expect("list").iter().any(|r| r.name == name), "{how}");
        assert_eq!(counts(store, &[&shared, &fresh]).await, vec![Some(1), None], "{how}: after");
        match store.fetch_atoms(&[fresh.hash]).await {
            Err(StoreError::MissingAtoms { count: 1, first, .. }) => assert_eq!(first, fresh.hash),
            other => panic!("{how}: fetching an atom of an uncommitted model gave {other:?}"),
        }
    }
    // And the name is free for a real ingest.
    let (outcome, _) = store_model(store, &m).await;
    assert_eq!((outcome.new, outcome.reused), (1, 1));
    assert_eq!(counts(store, &[&shared, &fresh]).await, vec![Some(2), Some(1)]);
    store.remove_model(&name, None).await.expect("rm");
    store.remove_model(&base.model.name, None).await.expect("rm");
}

/// A complete model of the same name and version is reported, not overwritten.
pub async fn begin_reports_an_existing_model(store: &dyn Store) {
    let m = synthetic(&unique("exists"), "7", &[("x", vec![atom(&[30.0])])]);
    let (_, row) = store_model(store, &m).await;
    match store.begin_model(&m.model).await.expect("begin") {
        BeginModel::Exists(found) => assert_eq!(*found, row),
        BeginModel::Writer(_) => panic!("a second writer for a stored model"),
    }
    // Another version is another model.
    let mut v8 = m.model.clone();
    v8.version = "8".into();
    writer(store, &v8).await.abort().await.expect("abort");
    store.remove_model(&m.model.name, Some("7")).await.expect("rm");
}

/// The writer refuses what would make a wrong model: a root that is not its atoms', an atom
/// never stored, a byte length its atoms do not hold. After a refusal the writer is spent.
pub async fn writer_refuses_inconsistent_layers(store: &dyn Store) {
    let (a, b) = (atom(&[40.0, 41.0]), atom(&[42.0, 43.0]));
    let m = synthetic(&unique("refuse"), "1", &[("x", vec![a.clone(), b.clone()])]);
    type Spoil = Box<dyn Fn(&mut LayerRecord)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("wrong root", Box::new(|l: &mut LayerRecord| l.tensor_root = Hash256([1; 32]))),
        ("atoms reordered", Box::new(|l: &mut LayerRecord| l.atoms.reverse())),
        ("atom never put", Box::new(|l: &mut LayerRecord| {
            l.atoms[1] = atom(&[99.0, 98.0]).hash;
            l.tensor_root = tensor_root(l.dtype, &l.shape, &l.atoms);
        })),
        ("byte length", Box::new(|l: &mut LayerRecord| {
            l.byte_length += 4;
            l.shape = vec![5];
            l.tensor_root = tensor_root(l.dtype, &l.shape, &l.atoms);
        })),
    ];
    for (what, spoil) in cases {
        let mut w = writer(store, &m.model).await;
        w.put_atoms(m.atoms.clone()).await.expect("put_atoms");
        let mut layer = m.layers[0].clone();
        spoil(&mut layer);
        match w.put_layers(vec![layer]).await {
            Err(StoreError::InvalidRecord { .. }) => {}
            other => panic!("{what}: put_layers gave {other:?}"),
        }
        assert!(w.put_atoms(vec![a.clone()]).await.is_err(), "{what}: a failed writer must not go on");
        drop(w);
        assert_eq!(counts(store, &[&a, &b]).await, vec![None, None], "{what}");
    }
}

/// The pager's read: any number of atoms, in batches, in the order asked, each once; a missing
/// one is an error that says how many.
pub async fn fetch_atoms_in_batches(store: &dyn Store) {
    let n = FETCH_BATCH_ATOMS * 2 + 3;
    let atoms: Vec<AtomRecord> = (0..n).map(|i| atom(&[i as f32, -(i as f32), 0.5])).collect();
    let m = synthetic(&unique("fetch"), "1", &[("x", atoms.clone())]);
    store_model(store, &m).await;
    let mut wanted: Vec<Hash256> = atoms.iter().rev().map(|a| a.hash).collect();
    wanted.push(atoms[n - 1].hash); // a repeat is served once
    let fetched = store.fetch_atoms(&wanted).await.expect("fetch");
    assert_eq!(fetched.len(), n);
    for (got, want) in fetched.iter().zip(atoms.iter().rev()) {
        assert_eq!((got.hash, got.encoding.as_str(), &got.payload), (want.hash, "F32", &want.payload));
    }
    let missing = [atom(&[1e9]).hash, atoms[0].hash, atom(&[2e9]).hash];
    match store.fetch_atoms(&missing).await {
        Err(StoreError::MissingAtoms { count: 2, first, .. }) => assert_eq!(first, missing[0]),
        other => panic!("fetching missing atoms gave {other:?}"),
    }
    assert_eq!(store.fetch_atoms(&[]).await.expect("empty fetch"), vec![]);
    store.remove_model(&m.model.name, None).await.expect("rm");
}

/// Content atoms are deduplicated by hash; embeddings are upserted per (atom, model) and
/// searched by cosine.
pub async fn embeddings_and_nearest(store: &dyn Store) {
    let m = synthetic(&unique("embedder"), "1", &[("x", vec![atom(&[50.0])])]);
    let (_, model) = store_model(store, &m).await;
    let texts = [ContentAtom::text("north"), ContentAtom::text("east"), ContentAtom::text("north-east")];
    let ids = store.put_content_atoms(&texts).await.expect("put content");
    let again = store.put_content_atoms(&texts[..1]).await.expect("put content again");
    assert_eq!(again, vec![ids[0]], "the same text is the same atom");
    let embeddings = vec![
        Embedding { atom: ids[0], vector: vec![0.0, 1.0, 0.0] },
        Embedding { atom: ids[1], vector: vec![1.0, 0.0, 0.0] },
        Embedding { atom: ids[2], vector: vec![1.0, 1.0, 0.0] },
    ];
    store.put_embeddings(model.id, &embeddings).await.expect("put embeddings");
    let near = store.nearest_embeddings(model.id, &[0.1, 1.0, 0.0], 2).await.expect("nearest");
    assert_eq!(near.iter().map(|n| n.atom).collect::<Vec<_>>(), vec![ids[0], ids[2]]);
    assert_eq!(near[0].atom_hash, texts[0].hash());
    assert!((near[0].cosine - 1.0 / 1.01f32.sqrt()).abs() < 1e-6, "{near:?}");
    // Upsert: `east` now points north and wins.
    store
        .put_embeddings(model.id, &[Embedding { atom: ids[1], vector: vec![0.0, 2.0, 0.0] }])
        .await
        .expect("replace");
    let near = store.nearest_embeddings(model.id, &[0.0, 1.0, 0.0], 3).await.expect("nearest");
    assert_eq!(near.iter().map(|n| n.atom).collect::<Vec<_>>(), vec![ids[0], ids[1], ids[2]], "ties to the lower id");
    assert!(store.nearest_embeddings(model.id, &[1.0, 0.0], 1).await.is_err(), "dimension mismatch");
    assert!(store.put_embeddings(model.id, &[Embedding { atom: ids[0], vector: vec![0.0; 1999] }]).await.is_err());
    // Removing the model removes its embeddings with it.
    store.remove_model(&m.model.name, None).await.expect("rm");
}

/// What the search index reads: the watermark moves when rows are added or a vector changes (a
/// replaced embedding gets a new id) and stays when the same vector is written again; paged
/// reads come in id order with the atoms' modality; embeddings and atoms by id, `None` where
/// there is none.
pub async fn embeddings_for_the_search_index(store: &dyn Store) {
    let m = synthetic(&unique("indexed"), "1", &[("x", vec![atom(&[51.0])])]);
    let (_, model) = store_model(store, &m).await;
    assert_eq!(store.embedding_watermark(model.id).await.expect("mark"), EmbeddingWatermark::default());
    let image = ContentAtom { modality: "image".into(), subtype: Some("png".into()), canonical_text: None, payload: Some(vec![1, 2, 3]) };
    let atoms = [ContentAtom::text(unique("first")), ContentAtom::text(unique("second")), image];
    let ids = store.put_content_atoms(&atoms).await.expect("put content");
    let vectors = [vec![1.0, 0.0], vec![0.0, 1.0], vec![0.5, 0.5]];
    let embeddings: Vec<Embedding> = ids.iter().zip(&vectors).map(|(&atom, v)| Embedding { atom, vector: v.clone() }).collect();
    store.put_embeddings(model.id, &embeddings).await.expect("put embeddings");
    let mark = store.embedding_watermark(model.id).await.expect("mark");
    assert_eq!(mark.count, 3);
    let all = store.embeddings_after(model.id, 0, 100).await.expect("all");
    assert_eq!(all.iter().map(|e| e.atom).collect::<Vec<_>>(), ids, "in id order");
    assert_eq!(all.iter().map(|e| e.modality.as_str()).collect::<Vec<_>>(), vec!["text", "text", "image"]);
    assert_eq!(all[1].vector, vectors[1]);
    assert_eq!(all.last().map(|e| e.id), Some(mark.max_id));
    let page = store.embeddings_after(model.id, all[0].id, 1).await.expect("page");
    assert_eq!(page.iter().map(|e| e.atom).collect::<Vec<_>>(), vec![ids[1]], "after an id, at most `limit`");
    // The same vector again changes nothing; a new one is a new row.
    store.put_embeddings(model.id, &embeddings[..1]).await.expect("same again");
    assert_eq!(store.embedding_watermark(model.id).await.expect("mark"), mark, "rewriting the same vector");
    store.put_embeddings(model.id, &[Embedding { atom: ids[0], vector: vec![-1.0, 0.0] }]).await.expect("replace");
    let replaced = store.embedding_watermark(model.id).await.expect("mark");
    assert_eq!(replaced.count, 3);
    assert!(replaced.max_id > mark.max_id, "a replaced vector is a new id: {replaced:?} after {mark:?}");
    let newest = store.embeddings_after(model.id, mark.max_id, 10).await.expect("newest");
    assert_eq!((newest.len(), newest[0].atom, newest[0].vector.clone()), (1, ids[0], vec![-1.0, 0.0]));

    let missing = ContentAtomId(i64::MAX);
    let by_atom = store.embeddings_of_atoms(model.id, &[ids[2], missing, ids[0]]).await.expect("by atom");
    assert_eq!(by_atom, vec![Some(vectors[2].clone()), None, Some(vec![-1.0, 0.0])]);
    let rows = store.content_atoms(&[ids[2], missing, ids[0]]).await.expect("atoms");
    let image_row = rows[0].clone().expect("the image atom");
    assert_eq!((image_row.modality.as_str(), image_row.text.clone(), image_row.payload_bytes), ("image", None, Some(3)));
    assert_eq!(image_row.hash, atoms[2].hash());
    assert!(rows[1].is_none());
    assert_eq!(rows[2].as_ref().and_then(|r| r.text.clone()), atoms[0].canonical_text.clone());
    store.remove_model(&m.model.name, None).await.expect("rm");
    assert_eq!(store.embedding_watermark(model.id).await.expect("mark").count, 0, "removed with the model");
}

/// Lineage writes are idempotent (a retried write is not applied twice) and read back whole.
pub async fn lineage_is_idempotent(store: &dyn Store) {
    let m = synthetic(&unique("lineage-model"), "1", &[("x", vec![atom(&[60.0])])]);
    let (_, model) = store_model(store, &m).await;
    let request = NewRequest {
        request_key: unique("request"),
        tenant: "acme".into(),
        operation: "embed".into(),
        model_names: vec![model.label()],
    };
    assert_eq!(store.find_request(&request.request_key).await.expect("find"), None);
    let id = store.record_request(&request).await.expect("record");
    assert_eq!(store.record_request(&request).await.expect("retry"), id, "same key, same request");
    assert_eq!(store.find_request(&request.request_key).await.expect("find"), Some(id));
    let step = StepRecord {
        request: id,
        ordinal: 0,
        operation: "embed".into(),
        model: Some(model.id),
        weights_root: model.weights_root,
        parameters_json: r#"{"pooling":"mean"}"#.into(),
        status: RunStatus::Succeeded,
        duration_ms: Some(1.5),
        tenant: "acme".into(),
    };
    store.record_step(&step).await.expect("step");
    store.record_step(&step).await.expect("step retried");
    let [input, output]: [ContentAtomId; 2] = store
        .put_content_atoms(&[ContentAtom::text("hello"), ContentAtom { modality: "embedding".into(), ..ContentAtom::text("[0.1]") }])
        .await
        .expect("atoms")
        .try_into()
        .expect("two ids");
    let edges = [
        LineageEdge { from: GraphNode::Atom(input), to: GraphNode::Request(id), relation: "input".into(), weight: 1.0, request: Some(id) },
        LineageEdge { from: GraphNode::Model(model.id), to: GraphNode::Request(id), relation: "ran".into(), weight: 1.0, request: Some(id) },
        LineageEdge { from: GraphNode::Request(id), to: GraphNode::Atom(output), relation: "output".into(), weight: 1.0, request: Some(id) },
    ];
    for e in edges.iter().chain(&edges[..1]) {
        store.add_lineage_edge(e).await.expect("edge");
    }
    let usage = UsageRecord {
        usage_key: None,
        tenant: "acme".into(),
        request: Some(id),
        operation: "embed".into(),
        model: Some(model.id),
        model_name: "minilm".into(),
        input_tokens: 3,
        output_tokens: 0,
        vectors: 1,
        compute_ms: 1.5,
        billing_units: 0.25,
        status_code: 200,
    };
    store.record_usage(&usage).await.expect("usage");
    store
        .complete_request(id, &RequestCompletion { status: RunStatus::Succeeded, duration_ms: 2.0, error_message: None })
        .await
        .expect("complete");

    let lineage = store.lineage(id).await.expect("lineage").expect("recorded");
    assert_eq!(lineage.request, request);
    assert_eq!((lineage.status, lineage.duration_ms), (RunStatus::Succeeded, Some(2.0)));
    assert_eq!(lineage.steps, vec![step]);
    assert_eq!(lineage.edges, edges.to_vec());
    assert_eq!(lineage.usage, vec![usage]);
    assert_eq!(store.lineage(RequestId(i64::MAX)).await.expect("lineage"), None);
    let dangling = LineageEdge { from: GraphNode::Atom(ContentAtomId(i64::MAX)), ..edges[0].clone() };
    assert!(store.add_lineage_edge(&dangling).await.is_err(), "an edge to nothing");
    assert!(store
        .complete_request(RequestId(i64::MAX), &RequestCompletion { status: RunStatus::Failed, duration_ms: 0.0, error_message: None })
        .await
        .is_err());

    // Lineage outlives the model: the step keeps the exact weights root it ran.
    store.remove_model(&m.model.name, None).await.expect("rm");
    let after = store.lineage(id).await.expect("lineage").expect("kept");
    assert_eq!((after.steps[0].model, after.steps[0].weights_root), (None, model.weights_root));
}

/// Names: a model name with several versions needs its version; an unknown one is not found.
pub async fn model_names_resolve(store: &dyn Store) {
    let name = unique("versions");
    let v1 = synthetic(&name, "1", &[("x", vec![atom(&[70.0])])]);
    let v2 = synthetic(&name, "2", &[("x", vec![atom(&[71.0])])]);
    store_model(store, &v1).await;
    store_model(store, &v2).await;
    assert!(matches!(store.model(&name, None).await, Err(StoreError::AmbiguousModel { .. })));
    assert!(matches!(store.remove_model(&name, None).await, Err(StoreError::AmbiguousModel { .. })));
    assert!(matches!(store.remove_model(&name, Some("3")).await, Err(StoreError::ModelNotFound { .. })));
    store.remove_model(&name, Some("1")).await.expect("rm 1");
    store.remove_model(&name, None).await.expect("rm the only version left");
    assert_eq!(store.model(&name, None).await.expect("model"), None);
}

/// A derived model (a student) names its parent, shares the parent's atoms through its own
/// references without putting them, and outlives the parent: removing either frees only what
/// the other does not use, and removing the parent clears the link but keeps `derived_by`.
pub async fn derived_models_share_atoms_and_keep_lineage(store: &dyn Store) {
    let (a, b, c) = (atom(&[1.5, 2.5]), atom(&[-3.5, 4.5]), atom(&[9.0, 8.0]));
    let parent_name = unique("parent");
    let parent = synthetic(&parent_name, "1", &[("w", vec![a.clone(), b.clone()]), ("v", vec![b.clone()])]);
    let (_, parent_row) = store_model(store, &parent).await;
    assert_eq!((parent_row.parent, parent_row.derived_by.as_deref()), (None, None));

    // The child reuses layer `w` as it is and adds one new atom of its own.
    let child_name = unique("child");
    let child = synthetic(&child_name, "1", &[("w", vec![a.clone(), b.clone()]), ("u", vec![c.clone()])]);
    let lineage = ModelLineage { parent: parent_row.id, derived_by: format!("test child of {}", parent_row.label()) };
    let mut w = match store.begin_derived_model(&child.model, &lineage).await.expect("begin_derived_model") {
        BeginModel::Writer(w) => w,
        BeginModel::Exists(row) => panic!("{} unexpectedly exists", row.label()),
    };
    // Only the new atom is put: the parent's are named by the layers alone.
    let outcome = w.put_atoms(vec![c.clone()]).await.expect("put_atoms");
    assert_eq!(outcome, PutAtomsOutcome { new: 1, reused: 0, bytes_written: 8 });
    w.put_layers(child.layers.clone()).await.expect("put_layers naming the parent's atoms");
    let child_row = w.commit(seal(&child)).await.expect("commit");
    assert_eq!(child_row.parent, Some(parent_row.id));
    assert_eq!(child_row.derived_by.as_deref(), Some(lineage.derived_by.as_str()));
    assert_eq!(store.model(&child_name, None).await.expect("model").as_ref(), Some(&child_row));
    assert_eq!(counts(store, &[&a, &b, &c]).await, vec![Some(2), Some(3), Some(1)]);
    assert_clean(&store.verify(Some(child_row.id)).await.expect("verify"));

    // The parent goes: only what the child does not use is freed; the child keeps its lineage text.
    let removed = store.remove_model(&parent_name, None).await.expect("remove parent");
    assert_eq!((removed.atoms_freed, removed.atoms_kept), (0, 2));
    assert_eq!(counts(store, &[&a, &b, &c]).await, vec![Some(1), Some(1), Some(1)]);
    let orphaned = store.model(&child_name, None).await.expect("model").expect("child stays");
    assert_eq!((orphaned.parent, orphaned.derived_by), (None, Some(lineage.derived_by.clone())));
    assert_clean(&store.verify(Some(orphaned.id)).await.expect("verify"));

    let removed = store.remove_model(&child_name, None).await.expect("remove child");
    assert_eq!((removed.atoms_freed, removed.bytes_freed), (3, 24));
    assert_eq!(counts(store, &[&a, &b, &c]).await, vec![None, None, None]);
}
