//! `kaos-net`
