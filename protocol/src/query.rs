//! The parameters of goim's HTTP push API (`/goim/push/keys?operation=1000&keys=a&keys=b`,
//! `/goim/push/room?operation=1000&type=live&room=1000`, ...): the query string as goim's gin
//! binding reads it. `application/x-www-form-urlencoded` (percent-escapes and `+` for space),
//! arrays are repeated keys (`keys=a&keys=b`), scalars take the first value. Every failure is a
//! message that starts with the parameter's name (`operation: "x" is not a 32-bit integer`),
//! which the dispatcher returns in goim's envelope with code -400.
//!
//! Pure, like the rest of this crate: the dispatcher hands it the raw query string.

/// The decoded `name=value` pairs of one query string, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a raw query string (`None`: the URI had none). Never fails: invalid
    /// percent-escapes are kept as written and invalid UTF-8 becomes U+FFFD.
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter, empty values left out.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A required, non-empty string.
    pub fn required(&self, name: &str) -> Result<String, String> {
        match self.first(name) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("{name}: required")),
        }
    }

    /// An optional int32 (absent or empty: `default`).
    pub fn i32_or(&self, name: &str, default: i32) -> Result<i32, String> {
        match self.first(name) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a 32-bit integer")),
        }
    }

    /// A required, non-zero int32 (goim's `binding:"required"` on an int).
    pub fn i32_nonzero(&self, name: &str) -> Result<i32, String> {
        match self.i32_or(name, 0)? {
            0 => Err(format!("{name}: required, and must not be 0")),
            v => Ok(v),
        }
    }

    /// Every value of a repeated int64 parameter.
    pub fn list_i64(&self, name: &str) -> Result<Vec<i64>, String> {
        self.list(name)
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{name}: {v:?} is not a 64-bit integer"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_scalars() {
        let p = Params::parse(Some(
            "keys=a&keys=b%20c&operation=1000&keys=&mids=1&mids=-2",
        ));
        assert_eq!(p.list("keys"), vec!["a", "b c"]);
        assert_eq!(p.i32_nonzero("operation"), Ok(1000));
        assert_eq!(p.list_i64("mids"), Ok(vec![1, -2]));
        assert_eq!(p.i32_or("speed", 0), Ok(0));
    }

    #[test]
    fn failures_name_the_parameter() {
        let p = Params::parse(Some("operation=x&mids=1&mids=two&limit=0&type="));
        assert!(
            p.i32_nonzero("operation")
                .unwrap_err()
                .starts_with("operation: \"x\"")
        );
        assert!(p.list_i64("mids").unwrap_err().starts_with("mids: \"two\""));
        assert_eq!(
            p.i32_nonzero("limit"),
            Err("limit: required, and must not be 0".into())
        );
        assert_eq!(p.required("type"), Err("type: required".into()));
        assert_eq!(p.required("room"), Err("room: required".into()));
        let big = Params::parse(Some("operation=99999999999"));
        assert!(
            big.i32_nonzero("operation")
                .unwrap_err()
                .contains("not a 32-bit")
        );
        assert!(Params::parse(None).list("keys").is_empty());
    }
}
