//! Username normalisation for unique-name enforcement: keep Unicode letters and digits,
//! lowercase them. `"John Doe"`, `"john.doe"` and `"JOHN-DOE"` share one normal form.

/// The normal form of a name; empty means "never a duplicate".
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
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
    }
}
