//! A cursor over the fuzz input: every read is total, so a short input just ends early.

/// The unread part of a fuzz input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next byte, if any.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// A length byte, then that many bytes.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.byte().unwrap_or(0);
        self.take(usize::from(n))
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}
