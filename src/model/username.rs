//! Username normalisation for unique-name enforcement: keep Unicode letters and digits,
//! lowercase them. `"John Doe"`, `"john.doe"` and `"JOHN-DOE"` share one normal form.

use unicode_normalization::UnicodeNormalization;

/// The normal form of a name; empty means "never a duplicate".
///
/// The name is first brought to Unicode NFKC, so that text which is the same to a reader
/// shares one form: `"José"` typed precomposed or as `e` + combining accent (where dropping
/// the accent alone would give `"jose"` and `"josé"`), and compatibility variants such as
/// full-width `"Ｊｏｈｎ"`. Letters and digits are kept after lowercasing, so combining marks
/// that lowercasing introduces (`"İ"` → `"i̇"`) are dropped too.
///
/// The sled store keys its username index by this form: changing it needs a numbered
/// migration that rebuilds the index (see `store::sled_store::migrations`).
pub fn normalise(name: &str) -> String {
    name.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// How unique usernames are enforced (app setting `enforce_unique_usernames`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Not enforced.
    #[default]
    No,
    /// Unique across the app.
    App,
    /// Unique among users sharing a team.
    Team,
}

impl Enforcement {
    /// Parses the setting's value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "no" => Some(Self::No),
            "app" => Some(Self::App),
            "team" => Some(Self::Team),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms_collide() {
        assert_eq!(normalise("John Doe"), "johndoe");
        assert_eq!(normalise("john.doe"), "johndoe");
        assert_eq!(normalise("JOHN-DOE"), "johndoe");
        assert_eq!(normalise("Ünïcode 42"), "ünïcode42");
        assert_eq!(normalise("..."), "");
        // Canonically equivalent spellings and compatibility variants collide.
        assert_eq!(normalise("Jos\u{e9}"), normalise("Jose\u{301}"));
        assert_eq!(normalise("Jos\u{e9}"), "jos\u{e9}");
        assert_eq!(normalise("\u{ff2a}\u{ff4f}\u{ff48}\u{ff4e}"), "john");
        assert_eq!(normalise("\u{130}stanbul"), "istanbul");
    }
}
