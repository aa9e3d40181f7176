//! The switch process (`kattach switch`): guest NICs as vhost-user virtio-net backends, the
//! uplink, and the event loop that carries out `kaos_net::switch`'s decisions.
//!
//! Design principles:
//! - **Copy once, decide on a copy.** A frame between two guests goes from the sender's buffers
//!   to the receiver's through [`copy`], on `vm-memory`'s bounds-checked slices; only its first
//!   bytes are copied out to be decided on (`head`), and those decided bytes are what the
//!   receiver gets.
//! - **Guest addresses are allegations**: a chain is checked once into segments inside guest
//!   memory (`chain`), bounded in length; a bad chain is dropped and counted, never followed.
//! - **Bounded work, no waiting on a peer**: a port handles at most [`tx::BATCH`] frames per
//!   wakeup; a receiver without buffers loses the frame; nothing blocks on another port.
//! - **One decision core** behind one mutex taken once per batch ([`fabric`]); copying happens
//!   outside it, receiver by receiver.
//! - **The control channel is a wire format** ([`control`]): postcard over a `SOCK_SEQPACKET`
//!   socketpair, versioned, bounded, and never a reason to panic.

pub mod backend;
#[doc(hidden)]
pub mod bench;
pub mod chain;
pub mod control;
pub mod copy;
#[doc(hidden)]
pub mod driver;
pub mod fabric;
#[doc(hidden)]
pub mod fuzzing;
pub mod head;
pub mod port;
pub mod ring;
pub mod rx;
pub mod seccomp;
pub mod tx;
pub mod uplink;
pub mod vnet;
