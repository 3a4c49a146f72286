//! Query strings: repeated keys (`command=a&command=b`) and percent
//! decoding, with typed reads that reject bad values by name.

use percent_encoding::percent_decode_str;

use super::status::ApiError;

/// The decoded `key=value` pairs of a query string, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect();
        Query { pairs }
    }

    /// Returns the first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Returns every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Returns a boolean parameter: `true` or `1` are true, absence is false.
    ///
    /// # Errors
    ///
    /// `400 BadRequest` for any other value.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false" | "0" | "") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value `{other}` for `{key}`: use true or false"
            ))),
        }
    }

    /// Returns a non-negative integer parameter.
    ///
    /// # Errors
    ///
    /// `400 BadRequest` for a value that is not one.
    pub fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|value| {
                value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value `{value}` for `{key}`: use a non-negative integer"
                    ))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::Query;

    #[test]
    fn query_keeps_repeated_keys_in_order() {
        let query = Query::parse(Some("command=sh&command=-c&command=echo+a%26b&stdout=1"));
        assert_eq!(query.all("command"), ["sh", "-c", "echo a&b"]);
        assert!(query.flag("stdout").expect("valid flag"));
        assert!(!query.flag("stdin").expect("absent flag"));
        assert!(Query::parse(Some("tty=yes")).flag("tty").is_err());
    }
}
