//! The input of `session_established`: which role the client has, then steps on an established
//! session. Requests travel as plaintext `ClientFrame` bodies, which the harness encrypts, so
//! the fuzzer works on the request encoding rather than on ciphertext it cannot forge.
//!
//! ```text
//! input := role step*                  role: byte % 3 → reader, operator, admin
//! step  := ctl ...                     ctl & 3 picks the step, ctl >> 2 the TCP piece size
//!   0: send    len body                the body, encrypted, as one frame
//!   1: tamper  len body at mask        the same, with ciphertext byte `at` xor'ed with `mask`
//!   2: poll                            one more poll of the streams
//!   3: replay  len body                the frame, then the very same bytes again
//! ```

use kaos_protocol::Role;

use crate::input::Input;

/// One step of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Send `body` encrypted, in TCP pieces of `piece` bytes (0: whole).
    Send { body: &'a [u8], piece: u8 },
    /// Send `body` encrypted, with byte `at` (modulo the length) of the frame xor'ed with `mask`
    /// (made odd, so the byte changes).
    Tamper {
        body: &'a [u8],
        piece: u8,
        at: u8,
        mask: u8,
    },
    /// Poll the streams once more.
    Poll,
    /// Send `body` encrypted, then the same frame again.
    Replay { body: &'a [u8], piece: u8 },
}

/// A parsed input: the role, then the steps (an iterator).
#[derive(Debug, Clone)]
pub struct Script<'a> {
    /// The client key's role.
    pub role: Role,
    steps: Input<'a>,
}

const ROLES: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

impl<'a> Script<'a> {
    /// Reads the role; the steps follow.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut input = Input::new(data);
        let role = ROLES[usize::from(input.byte().unwrap_or(0)) % ROLES.len()];
        Self { role, steps: input }
    }
}

impl<'a> Iterator for Script<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        let ctl = self.steps.byte()?;
        let piece = ctl >> 2;
        Some(match ctl & 3 {
            0 => Step::Send {
                body: self.steps.chunk(),
                piece,
            },
            1 => Step::Tamper {
                body: self.steps.chunk(),
                piece,
                at: self.steps.byte().unwrap_or(0),
                mask: self.steps.byte().unwrap_or(0) | 1,
            },
            2 => Step::Poll,
            _ => Step::Replay {
                body: self.steps.chunk(),
                piece,
            },
        })
    }
}

/// Writes a script: the inverse of [`Script::parse`] (bodies are cut at 255 bytes).
pub fn encode(role: Role, steps: &[Step<'_>]) -> Vec<u8> {
    let role = ROLES.iter().position(|&r| r == role).unwrap_or(0);
    let mut out = vec![u8::try_from(role).unwrap_or(0)];
    let chunk = |out: &mut Vec<u8>, body: &[u8]| {
        let body = &body[..body.len().min(255)];
        out.push(u8::try_from(body.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(body);
    };
    for step in steps {
        match *step {
            Step::Send { body, piece } => {
                out.push(piece << 2);
                chunk(&mut out, body);
            }
            Step::Tamper {
                body,
                piece,
                at,
                mask,
            } => {
                out.push(piece << 2 | 1);
                chunk(&mut out, body);
                out.extend_from_slice(&[at, mask]);
            }
            Step::Poll => out.push(2),
            Step::Replay { body, piece } => {
                out.push(piece << 2 | 3);
                chunk(&mut out, body);
            }
        }
    }
    out
}
