//! MTP draft acceptance by draft position. Draft i is verified only if drafts 1..i-1 were
//! accepted, and later drafts are accepted less often (reference section 6: DeepSeek's
//! 80-90% for the second token; TensorRT-LLM's MTP-3 reaches ~2.4-2.7 accepted tokens per
//! step, not the 3.2 that 0.85 per draft would give).

use serde::{Deserialize, Serialize};

/// Draft positions a list may give.
pub const MAX_POSITIONS: usize = 16;

/// Entry i is the chance that draft i + 1 is accepted given drafts 1..=i were; drafts past
/// the list take its last entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    by_position: [f64; MAX_POSITIONS],
    len: usize,
}

/// As files write it: one chance for every draft, or one per draft position.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AcceptanceFile {
    One(f64),
    PerPosition(Vec<f64>),
}

impl Acceptance {
    /// The same chance for every draft.
    pub fn uniform(p: f64) -> Self {
        Acceptance {
            by_position: [p; MAX_POSITIONS],
            len: 1,
        }
    }

    /// From a file's value; `Err` says what is wrong.
    pub fn from_file(f: &AcceptanceFile) -> Result<Self, String> {
        let values: &[f64] = match f {
            AcceptanceFile::One(p) => std::slice::from_ref(p),
            AcceptanceFile::PerPosition(v) => v,
        };
        if values.is_empty() || values.len() > MAX_POSITIONS {
            return Err(format!(
                "give 1 to {MAX_POSITIONS} acceptance chances, got {}",
                values.len()
            ));
        }
        if let Some(bad) = values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(format!("must be a probability in [0, 1], got {bad}"));
        }
        let mut by_position = [values[values.len() - 1]; MAX_POSITIONS];
        by_position[..values.len()].copy_from_slice(values);
        Ok(Acceptance {
            by_position,
            len: values.len(),
        })
    }

    /// The chance that draft `draft` (1-based) is accepted, given the drafts before it were.
    pub fn at(&self, draft: u64) -> f64 {
        let i = (draft.max(1) - 1).min(MAX_POSITIONS as u64 - 1) as usize;
        self.by_position[i]
    }

    /// The chances as given.
    pub fn values(&self) -> &[f64] {
        &self.by_position[..self.len]
    }

    /// Expected tokens a request gains per step with `drafts` drafts: 1 + a1 + a1 a2 + ...
    pub fn tokens_per_step(&self, drafts: u64) -> f64 {
        let (mut tokens, mut reach) = (1.0, 1.0);
        for d in 1..=drafts {
            reach *= self.at(d);
            tokens += reach;
        }
        tokens
    }
}

/// `0.85`, or `0.85, 0.54` per draft position.
impl std::fmt::Display for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.values().iter().map(f64::to_string).collect();
        write!(f, "{}", parts.join(", "))
    }
}

impl Serialize for Acceptance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.values() {
            [one] => s.serialize_f64(*one),
            many => many.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_step_falls_with_position() {
        let flat = Acceptance::uniform(0.85);
        assert!((flat.tokens_per_step(1) - 1.85).abs() < 1e-12);
        assert!((flat.tokens_per_step(3) - (1.0 + 0.85 + 0.7225 + 0.614125)).abs() < 1e-12);
        let falling =
            Acceptance::from_file(&AcceptanceFile::PerPosition(vec![0.85, 0.54])).unwrap();
        // The last chance repeats past the list.
        assert_eq!(falling.at(3), 0.54);
        let three = falling.tokens_per_step(3);
        assert!((three - (1.0 + 0.85 + 0.85 * 0.54 + 0.85 * 0.54 * 0.54)).abs() < 1e-12);
        assert!(
            (2.4..2.7).contains(&three),
            "reference section 6: MTP-3 ~2.4-2.7, {three}"
        );
        assert_eq!(flat.tokens_per_step(0), 1.0);
    }

    #[test]
    fn bad_lists_say_why() {
        let e = |v: Vec<f64>| Acceptance::from_file(&AcceptanceFile::PerPosition(v)).unwrap_err();
        assert!(e(vec![]).contains("1 to 16"));
        assert!(e(vec![0.5, 1.5]).contains("got 1.5"));
        assert!(Acceptance::from_file(&AcceptanceFile::One(-0.1)).is_err());
    }
}
