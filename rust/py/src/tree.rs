//! The layout's nested structure with dict keys made Python strings once,
//! so that neither flatten nor unflatten allocates or converts a key on the
//! hot path.

use pufferrs_core::layout::Node;
use pyo3::prelude::*;
use pyo3::types::PyString;

pub enum Tree {
    Dict(Vec<(String, Py<PyString>, Tree)>),
    Tuple(Vec<Tree>),
    /// An index into the layout's leaves.
    Leaf(usize),
}

impl Tree {
    pub fn new(py: Python<'_>, node: &Node) -> Tree {
        match node {
            Node::Dict(items) => Tree::Dict(
                items.iter().map(|(k, n)| (k.clone(), PyString::intern(py, k).unbind(), Tree::new(py, n))).collect(),
            ),
            Node::Tuple(items) => Tree::Tuple(items.iter().map(|n| Tree::new(py, n)).collect()),
            Node::Leaf(i) => Tree::Leaf(*i),
        }
    }
}
