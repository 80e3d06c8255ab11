//! The scenario runner behind `benchrun`.
