//! The switch's TX path (`kaos_vswitch::tx::tx_batch`) over a guest whose whole memory and TX
//! queue layout come from the input: descriptor table, rings, chains (looping, indirect, out of
//! memory, across a region boundary, any lengths and flags) and frames, forwarded through a
//! real fabric to a well-behaved guest. It never panics, every batch ends, and what arrives is
//! a whole, bounded frame. The input format and the checks are in `kaos_vswitch::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kaos_vswitch::fuzzing::tx_queue(data);
});
