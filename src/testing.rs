//! The shipped files, loaded for unit tests.

use crate::hardware::{GpuSpec, load_spec, spec_path};
use crate::model::memory::{AttentionLayout, DEFAULT_KV_SHARE_OF_FREE_MEMORY, Deployment};
use crate::model::{ModelConfig, Precision, load_model};
use crate::topology::Topology;
use std::path::{Path, PathBuf};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn topology(name: &str) -> Topology {
    crate::topology::load(&repo(&format!("topologies/{name}.yaml")))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A shipped topology with parameters set, as `--set name=value` would.
pub fn topology_with(name: &str, set: &[(&str, u64)]) -> Topology {
    let set = set
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::topology::load_with(&repo(&format!("topologies/{name}.yaml")), &set)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A topology from YAML text, its GPU specs the shipped ones (`GPU_SPECS` in the text).
pub fn topology_from_text(yaml: &str) -> Result<Topology, crate::input::Diagnostics> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yaml");
    let specs = repo("topologies/gpus");
    std::fs::write(&file, yaml.replace("GPU_SPECS", specs.to_str().unwrap())).unwrap();
    crate::topology::load(&file)
}

pub fn model(name: &str) -> ModelConfig {
    load_model(&repo(&format!("models/{name}.yaml"))).unwrap_or_else(|e| panic!("{e}"))
}

pub fn gpu(name: &str) -> GpuSpec {
    load_spec(&spec_path(&repo("topologies/gpus"), name)).unwrap_or_else(|e| panic!("{e}"))
}

/// DP attention, NVFP4 experts, FP8 elsewhere and in the KV cache, MTP loaded: the
/// DeepSeek-R1 on GB200 setup of the wide-EP results.
pub fn nvfp4_deployment(ep: u64, slots: u64) -> Deployment {
    Deployment {
        ep,
        moe_tp: 1,
        slots,
        attention: AttentionLayout::Dp,
        expert_precision: Precision::Nvfp4,
        other_precision: Precision::Fp8,
        attention_precision: Precision::Fp8,
        kv_precision: Precision::Fp8,
        mtp: true,
        kv_share_of_free_memory: DEFAULT_KV_SHARE_OF_FREE_MEMORY,
    }
}
