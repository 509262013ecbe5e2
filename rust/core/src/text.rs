//! Strings in rows: a `Text` leaf holds `max_length` character codes, then
//! the string's length (see `Rule::Text`). The one encoding; Python only
//! describes the space.
//!
//! This module builds on `layout` (it encodes into a `Text` leaf that
//! `layout` placed and sized), never the other way round.

use crate::dtype::Value;
use crate::layout::{Leaf, Rule, Space};
use crate::names::quote;

/// Characters a string space that lists none (MiniGrid's mission spaces)
/// may hold: printable ASCII, space to tilde.
pub const STRING_CHARSET: std::ops::RangeInclusive<char> = ' '..='~';

/// The longest string such a space holds when its user does not say.
pub const DEFAULT_STRING_LENGTH: usize = 128;

/// What a string too long for such a space adds to its error: the options
/// that set the length (the CLI's, and the wrapper behind it).
fn string_length_hint() -> String {
    format!(
        "; a string space that is not Text (a MiniGrid or BabyAI mission) holds as many characters as \
         --max-string-length or pufferrs.wrappers.StringObservations(env, max_length) gives it \
         (default {DEFAULT_STRING_LENGTH}): give it the longest string the env can produce"
    )
}

impl Space {
    /// A string-valued space that is not `Text`: read as `Text` over
    /// [`STRING_CHARSET`] of at most `max_length` characters, none required.
    pub fn string(max_length: usize) -> Space {
        Space::Text { charset: STRING_CHARSET.collect(), min_length: 0, max_length }
    }
}

impl Leaf {
    /// The codes of `text` in a `Text` leaf (see [`Rule::Text`]); the error
    /// says which character or how much length does not fit.
    pub fn encode_text(&self, text: &str) -> std::result::Result<Vec<Value>, String> {
        let Rule::Text { charset, min_length, max_length } = &self.rule else {
            return Err("not a string leaf".into());
        };
        let mut codes = vec![Value::Int(0); max_length + 1];
        let mut length = 0;
        for c in text.chars() {
            if length == *max_length {
                let n = text.chars().count();
                let mut reason = format!("expected at most {max_length} characters, got {n}: {}", quote(text));
                if *min_length == 0 && charset.iter().copied().eq(STRING_CHARSET) {
                    // Read by our rule, not the env's (see `Space::string`):
                    // the length is the user's to choose, so say how. Such a
                    // string is a mission, which arrives mid-run at a reset.
                    reason += &string_length_hint();
                }
                return Err(reason);
            }
            let Ok(position) = charset.binary_search(&c) else {
                return Err(format!(
                    "character {} of {} is not in the space's charset",
                    quote(&c.to_string()),
                    quote(text)
                ));
            };
            codes[length] = Value::Int(position as i128 + 1);
            length += 1;
        }
        if length < *min_length {
            return Err(format!("expected at least {min_length} characters, got {length}: {}", quote(text)));
        }
        codes[*max_length] = Value::Int(length as i128);
        Ok(codes)
    }

    /// The string that `codes` (a `Text` leaf's values) encode. Only what
    /// `encode_text` writes decodes: a length outside the space's
    /// `[min_length, max_length]` or a non-zero code after the length is a
    /// corrupted row, never a string the space does not allow.
    pub fn decode_text(&self, codes: &[i128]) -> std::result::Result<String, String> {
        let Rule::Text { charset, min_length, max_length } = &self.rule else {
            return Err("not a string leaf".into());
        };
        if codes.len() != max_length + 1 {
            return Err(format!("expected {} codes, got {}", max_length + 1, codes.len()));
        }
        let length = usize::try_from(codes[*max_length]).ok().filter(|n| (*min_length..=*max_length).contains(n));
        let length =
            length.ok_or_else(|| format!("length {} is not in [{min_length}, {max_length}]", codes[*max_length]))?;
        if let Some(k) = codes[length..*max_length].iter().position(|&code| code != 0) {
            return Err(format!(
                "code {} at position {} follows the string's length {length}: codes after it must be 0",
                codes[length + k],
                length + k
            ));
        }
        codes[..length]
            .iter()
            .map(|&code| {
                usize::try_from(code - 1)
                    .ok()
                    .and_then(|i| charset.get(i).copied())
                    .ok_or_else(|| format!("code {code} is not a character of the charset"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::layout::Layout;
    use DType::*;

    fn discrete(dtype: DType) -> Space {
        Space::Discrete { dtype, n: 5, start: 0 }
    }

    fn dict(items: Vec<(&str, Space)>) -> Space {
        Space::Dict(items.into_iter().map(|(k, s)| (k.to_string(), s)).collect())
    }

    #[test]
    fn text_is_codes_then_length() {
        let space = dict(vec![
            ("a", discrete(I64)),
            ("s", Space::Text { charset: vec!['b', 'a', ' ', 'a'], min_length: 1, max_length: 4 }),
        ]);
        let layout = Layout::new(&space, "obs").unwrap();
        let leaf = &layout.leaves[1];
        assert_eq!((leaf.dtype, leaf.shape.clone(), leaf.offset), (U8, vec![5], 8));
        let codes = leaf.encode_text("ab a").unwrap();
        let ints: Vec<i128> = codes.iter().map(|v| if let Value::Int(i) = v { *i } else { -1 }).collect();
        assert_eq!(ints, vec![2, 3, 1, 2, 4]);
        assert_eq!(leaf.decode_text(&ints).unwrap(), "ab a");
        assert_eq!(leaf.encode_text("ab").unwrap()[2..], [Value::Int(0), Value::Int(0), Value::Int(2)]);
        assert_eq!(leaf.encode_text("abab a").unwrap_err(), "expected at most 4 characters, got 6: 'abab a'");
        assert_eq!(leaf.encode_text("c").unwrap_err(), "character 'c' of 'c' is not in the space's charset");
        assert_eq!(leaf.encode_text("").unwrap_err(), "expected at least 1 characters, got 0: ''");
        assert!(leaf.check(0, Value::Int(3)).is_ok());
        assert!(leaf.check(0, Value::Int(4)).is_err());
        assert!(leaf.check(4, Value::Int(0)).is_err());
        // Corrupted rows: a length below min_length, or codes after the length.
        assert_eq!(leaf.decode_text(&[0, 0, 0, 0, 0]).unwrap_err(), "length 0 is not in [1, 4]");
        assert_eq!(leaf.decode_text(&[2, 0, 0, 0, 5]).unwrap_err(), "length 5 is not in [1, 4]");
        assert_eq!(
            leaf.decode_text(&[2, 3, 0, 1, 2]).unwrap_err(),
            "code 1 at position 3 follows the string's length 2: codes after it must be 0"
        );
        assert_eq!(leaf.decode_text(&[2, 3, 0, 0, 2]).unwrap(), "ab");
        let long = Layout::new(&Space::string(300), "obs").unwrap();
        // Too long for a string space that is not Text: the error says how
        // to give it more room; for a Text space the env chose the length.
        let mission = &Layout::new(&Space::string(3), "obs").unwrap().leaves[0];
        let refusal = mission.encode_text("abcd").unwrap_err();
        assert!(refusal.starts_with("expected at most 3 characters, got 4: 'abcd'; a string space that is not Text"));
        assert!(refusal.contains("--max-string-length or pufferrs.wrappers.StringObservations(env, max_length)"));
        assert_eq!((long.leaves[0].dtype, long.leaves[0].shape.clone()), (U16, vec![301]));
    }
}
