//! The bytes the decision core sees of a frame.
//!
//! A frame of at most [`WHOLE_MAX`] bytes is copied whole out of the guest and decided on as
//! it is. Of a longer one only the first [`HEAD_LEN`] bytes are copied (every header the core
//! reads fits: 14 + 4 + 60 + 60 for Ethernet, a tag, IPv4 and TCP with options, or an ICMP
//! error quoting a packet with options); the rest never leaves guest memory except to go
//! straight into the receiver's buffers. The core checks lengths against the bytes it is given
//! (an IPv4 total length beyond them is `Malformed`), so before deciding, [`clamp`] shortens
//! the IPv4 total length (and a whole UDP datagram's length) of the copy to what the copy
//! holds, but only when the real lengths agree with the real frame: a frame the core would
//! refuse whole is left as it is and refused the same way. [`restore`] puts the real values
//! back before the copy is delivered.
//!
//! What a long frame loses: a DHCP message from an address-less guest longer than
//! [`WHOLE_MAX`] is no longer recognised as one (DHCP clients send 300–576 bytes).
//!
//! The copy is also what is delivered: the receiver gets the bytes that were decided on, not
//! whatever the sender wrote into its buffer meanwhile.

/// Frames up to this long are decided on whole.
pub const WHOLE_MAX: usize = 640;
/// Of longer frames, this many bytes are copied for the decision.
pub const HEAD_LEN: usize = 192;

const ETHERTYPE_IPV4: u16 = 0x0800;
const TPID_8021Q: u16 = 0x8100;
const UDP: u8 = 17;

/// The fields [`clamp`] changed, to put back: each field's offset in the head (0 for none: no
/// length field is at 0) and its old bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Patch {
    saved: [(u16, [u8; 2]); 2],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let field = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([field[0], field[1]]))
}

fn set16(b: &mut [u8], at: usize, v: u16, saved: &mut (u16, [u8; 2])) {
    if let (Some(field), Ok(offset)) = (b.get_mut(at..at + 2), u16::try_from(at)) {
        *saved = (offset, [field[0], field[1]]);
        field.copy_from_slice(&v.to_be_bytes());
    }
}

/// Makes `head`, the first bytes of a frame of `frame_len` bytes, decidable as the whole frame
/// would be (see the module documentation). Returns what to [`restore`].
///
/// A head shorter than its frame is [`HEAD_LEN`] bytes (one of any other length is left as it
/// is): every field read is at a bounded offset of that array, checked at compile time.
#[inline(never)] // out of the way of the short frames' decision loop
pub fn clamp(head: &mut [u8], frame_len: usize) -> Patch {
    let mut patch = Patch::default();
    if head.len() >= frame_len {
        return patch;
    }
    let Ok(head) = <&mut [u8; HEAD_LEN]>::try_from(head) else {
        return patch;
    };
    let ip = match be16(head, 12) {
        Some(TPID_8021Q) => 18,
        _ => 14,
    };
    if be16(head, ip - 2) != Some(ETHERTYPE_IPV4) {
        return patch;
    }
    let (Some(&vihl), Some(total)) = (head.get(ip), be16(head, ip + 2)) else {
        return patch;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(total);
    let head_avail = head.len() - ip;
    if vihl >> 4 != 4 || ihl < 20 || total > frame_len - ip || total <= head_avail {
        return patch;
    }
    // `head_avail` < `total` <= 65535.
    let clamped = u16::try_from(head_avail).unwrap_or(u16::MAX);
    set16(head, ip + 2, clamped, &mut patch.saved[0]);
    let frag = be16(head, ip + 6).unwrap_or(0xffff);
    let whole = frag & 0x3fff == 0;
    if head.get(ip + 9) == Some(&UDP) && whole {
        let udp = ip + ihl;
        if let Some(udp_len) = be16(head, udp + 4).map(usize::from)
            && udp_len <= total - ihl
            && udp_len > head_avail.saturating_sub(ihl)
        {
            let short = u16::try_from(head_avail.saturating_sub(ihl)).unwrap_or(u16::MAX);
            set16(head, udp + 4, short, &mut patch.saved[1]);
        }
    }
    patch
}

/// Puts back what [`clamp`] changed.
pub fn restore(head: &mut [u8], patch: Patch) {
    for (at, bytes) in patch.saved {
        let at = usize::from(at);
        if at != 0
            && let Some(field) = head.get_mut(at..at + 2)
        {
            field.copy_from_slice(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaos_net::switch::fixture::{A, B, udp_frame};

    #[test]
    fn a_long_udp_frame_is_clamped_and_restored() {
        let frame = udp_frame(A, B, (1, 2), &[7u8; 1000]);
        let mut head = frame[..HEAD_LEN].to_vec();
        let patch = clamp(&mut head, frame.len());
        assert_eq!(be16(&head, 16), u16::try_from(HEAD_LEN - 14).ok());
        assert_eq!(be16(&head, 38), u16::try_from(HEAD_LEN - 34).ok());
        restore(&mut head, patch);
        assert_eq!(head, frame[..HEAD_LEN]);
    }

    #[test]
    fn inconsistent_or_short_frames_are_left_alone() {
        let frame = udp_frame(A, B, (1, 2), &[7u8; 1000]);
        let mut head = frame[..HEAD_LEN].to_vec();
        // The frame is said to be shorter than its IPv4 total length: the core must see that.
        assert_eq!(clamp(&mut head, 900), Patch::default());
        assert_eq!(head, frame[..HEAD_LEN]);
        let mut whole = frame.clone();
        let len = whole.len();
        assert_eq!(clamp(&mut whole, len), Patch::default());
    }
}
