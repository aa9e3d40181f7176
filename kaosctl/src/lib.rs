//! kaosctl
