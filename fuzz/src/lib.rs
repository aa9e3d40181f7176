//! Harness pieces shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every parser of bytes from the network or a disk has a target; each must stay bounded and
//! never panic, whatever it is fed. The session targets drive a real [`kaos_net::Session`] with
//! no network: [`host::Host`] is the fake host behind it, [`feed`] delivers bytes the way TCP
//! may (in any pieces) and checks the session's invariants on the way, [`noise`] is a client
//! that can put any payload in a handshake message, and [`script`] is the input format of
//! `session_established`. [`seeds`] builds the committed seed inputs (`fuzz/seeds/`).
//!
//! A panic here is a finding: the targets assert properties, not just absence of crashes.

pub mod feed;
pub mod host;
pub mod input;
pub mod noise;
pub mod script;
pub mod seeds;
