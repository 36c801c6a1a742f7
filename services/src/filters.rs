//! containerd's filter syntax for `List` calls.
//!
//! ```text
//! filter    := selector ("," selector)*          all must match
//! selector  := fieldpath [op value]              no op: the field is present
//! fieldpath := field ("." field)*
//! op        := "==" | "!=" | "~="
//! field, value := bare word | "quoted" | /quoted/ | |quoted|
//! ```
//!
//! Several filter strings are OR'ed: an object matches when any one does.
//! An empty list matches everything.

use std::collections::BTreeMap;

use regex::Regex;
use thiserror::Error;

use hull_proto::errdefs::{Classify, Kind};

/// A filter string did not parse.
#[derive(Debug, Error)]
pub enum FilterError {
    /// The string breaks the grammar at a byte offset.
    #[error("parse error in filter {filter:?} at position {pos}: {reason}")]
    Syntax {
        /// The whole filter string.
        filter: String,
        /// Byte offset of the problem.
        pos: usize,
        /// What was expected.
        reason: &'static str,
    },
    /// A `~=` value is not a valid regular expression.
    #[error("invalid regular expression in filter {filter:?}")]
    Regex {
        /// The whole filter string.
        filter: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
}

impl Classify for FilterError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// Objects that filters can look into.
pub trait Adaptor {
    /// The value at `path`, or `None` when the field is absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed set of filters: an OR of ANDs.
#[derive(Debug, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses the filter strings of a request.
    ///
    /// # Errors
    /// InvalidArgument when a string does not parse.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            any.push(Parser::new(f).parse()?);
        }
        Ok(Filter { any })
    }

    /// Whether the object passes.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(obj)))
    }
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let value = obj.field(&self.path);
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value.as_deref() == Some(v.as_str()),
            // containerd treats an absent field as the empty string here.
            Op::NotEqual(v) => value.as_deref().unwrap_or("") != v,
            Op::Matches(re) => value.is_some_and(|s| re.is_match(&s)),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn err(&self, reason: &'static str) -> FilterError {
        FilterError::Syntax {
            filter: self.src.to_owned(),
            pos: self.pos,
            reason,
        }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn parse(mut self) -> Result<Vec<Selector>, FilterError> {
        let mut all = Vec::new();
        loop {
            all.push(self.selector()?);
            self.skip_ws();
            match self.rest().chars().next() {
                None => return Ok(all),
                Some(',') => self.pos += 1,
                Some(_) => return Err(self.err("expected ',' or end of filter")),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let mut path = vec![self.field()?];
        loop {
            self.skip_ws();
            if self.rest().starts_with('.') {
                self.pos += 1;
                path.push(self.field()?);
            } else {
                break;
            }
        }
        self.skip_ws();
        let rest = self.rest();
        let op = if rest.starts_with("==") {
            "=="
        } else if rest.starts_with("!=") {
            "!="
        } else if rest.starts_with("~=") {
            "~="
        } else if rest.is_empty() || rest.starts_with(',') {
            return Ok(Selector {
                path,
                op: Op::Present,
            });
        } else {
            return Err(self.err("expected an operator (==, != or ~=)"));
        };
        self.pos += 2;
        self.skip_ws();
        let value = self.value()?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(Regex::new(&value).map_err(|source| FilterError::Regex {
                filter: self.src.to_owned(),
                source,
            })?),
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, FilterError> {
        self.skip_ws();
        if let Some(q) = self.quoted()? {
            return Ok(q);
        }
        let len = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.err("expected a field name"));
        }
        let field = self.rest()[..len].to_owned();
        self.pos += len;
        Ok(field)
    }

    fn value(&mut self) -> Result<String, FilterError> {
        if let Some(q) = self.quoted()? {
            return Ok(q);
        }
        let len = self.rest().find(',').unwrap_or(self.rest().len());
        let value = self.rest()[..len].trim_end().to_owned();
        if value.is_empty() {
            return Err(self.err("expected a value"));
        }
        self.pos += len;
        Ok(value)
    }

    /// A quoted token, if one starts here. `"` quotes take backslash
    /// escapes; `/` and `|` quotes are raw, for regular expressions.
    fn quoted(&mut self) -> Result<Option<String>, FilterError> {
        let Some(q) = self
            .rest()
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '/' | '|'))
        else {
            return Ok(None);
        };
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.pos += i + 1;
                return Ok(Some(out));
            }
            if c == '\\' && q == '"' {
                match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e)) => out.push(e),
                    None => break,
                }
            } else if c == '\\' {
                // Raw quotes keep escapes for the regex engine, except an
                // escaped closing quote.
                match chars.next() {
                    Some((_, e)) if e == q => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        self.pos = start;
        Err(self.err("unterminated quoted string"))
    }
}

/// Looks up `labels.<key>` in a label map; the key may span several path
/// elements when it was written without quotes (`labels.a.b`).
pub fn label_field(labels: &BTreeMap<String, String>, rest: &[String]) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    labels.get(&rest.join(".")).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Obj {
        name: String,
        labels: BTreeMap<String, String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, &path[1..]),
                _ => None,
            }
        }
    }

    fn obj() -> Obj {
        Obj {
            name: "docker.io/library/busybox:latest".into(),
            labels: [
                ("containerd.io/gc.root".to_string(), "x".to_string()),
                ("a".into(), "1".into()),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn m(filters: &[&str]) -> bool {
        Filter::parse(filters).unwrap().matches(&obj())
    }

    #[test]
    fn operators() {
        assert!(m(&[]));
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name!=docker.io/library/busybox:latest"]));
        assert!(m(&["name~=busybox"]));
        assert!(m(&["name~=/^docker\\.io/"]));
        assert!(m(&["labels.a"]));
        assert!(!m(&["labels.b"]));
        assert!(m(&["labels.b!=1"]));
        assert!(m(&[r#"labels."containerd.io/gc.root"==x"#]));
        assert!(m(&["labels.a==1, name~=busy"]));
        assert!(!m(&["labels.a==2,name~=busy"]));
        assert!(m(&["labels.a==2", "name~=busy"]));
        assert!(m(&[r#"name=="docker.io/library/busybox:latest""#]));
    }

    #[test]
    fn syntax_errors_are_invalid_argument() {
        for bad in [
            "name=",
            "==x",
            "name==",
            "labels.\"open",
            "name~=(",
            "name ==a b,",
        ] {
            let err = Filter::parse(&[bad]).err();
            if bad == "name ==a b," {
                // A bare value runs to the next comma; the trailing empty
                // selector is the error.
                assert!(err.is_some());
                continue;
            }
            assert_eq!(err.expect(bad).kind(), Kind::InvalidArgument, "{bad}");
        }
    }
}
