//! Graphviz DOT export: `epsim topo show FILE --format dot | dot -Tsvg > topo.svg`.

use super::{LinkKind, NodeKind, Topology};
use std::fmt::Write;

/// The topology as an undirected DOT graph: one node per device, one edge per link bundle,
/// labelled with its per-direction bandwidth (times lanes, when bundled).
pub fn to_dot(topo: &Topology) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "graph {} {{", quote(&topo.name));
    let _ = writeln!(
        out,
        "  layout=neato; overlap=false; splines=true; node [fontsize=10]; edge [fontsize=8];"
    );
    for node in topo.graph.node_weights() {
        let (shape, color) = match node.kind {
            NodeKind::Gpu => ("box", "palegreen"),
            NodeKind::Nvswitch => ("hexagon", "lightblue"),
            NodeKind::Nic => ("ellipse", "khaki"),
            NodeKind::Cpu => ("box3d", "lightsalmon"),
            NodeKind::Switch => ("doubleoctagon", "lightgrey"),
        };
        let label = match &node.gpu_spec {
            Some(spec) => format!("{}\n{spec}", node.id),
            None => node.id.clone(),
        };
        let _ = writeln!(
            out,
            "  {} [shape={shape}, style=filled, fillcolor={color}, label={}];",
            quote(&node.id),
            quote(&label)
        );
    }
    for edge in topo.graph.raw_edges() {
        let link = &edge.weight;
        let (a, b) = (&topo.graph[edge.source()].id, &topo.graph[edge.target()].id);
        let lanes = if link.lanes > 1 {
            format!("{} x ", link.lanes)
        } else {
            String::new()
        };
        let style = match link.kind {
            LinkKind::Nvlink => "solid",
            LinkKind::C2c => "bold",
            LinkKind::Pcie => "dashed",
            LinkKind::Network => "dotted",
        };
        let _ = writeln!(
            out,
            "  {} -- {} [style={style}, label={}];",
            quote(a),
            quote(b),
            quote(&format!("{lanes}{} GB/s", link.lane_gb_s))
        );
    }
    out.push_str("}\n");
    out
}

/// A DOT double-quoted string; a newline becomes DOT's centred line break.
fn quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}
