//! Table name patterns as `pg_dump --table` spells them: `name`,
//! `schema.name`, with `*` and `?` wildcards; unquoted letters are folded
//! to lower case, double quotes keep case and make `*`, `?` and `.` literal.
//!
//! One difference from pg_dump: an unqualified pattern matches tables of
//! every schema, not only those visible on the search path. cairn resolves
//! patterns itself and hands pg_dump the exact tables it chose, so the
//! schema archive and the table data always agree.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyRun,
    AnyOne,
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    schema: Option<Vec<Token>>,
    name: Vec<Token>,
}

impl Pattern {
    /// Parses a pattern; an empty one or one with more than one unquoted
    /// dot is refused.
    pub fn parse(text: &str) -> Result<Pattern> {
        let mut parts: Vec<Vec<Token>> = vec![Vec::new()];
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    parts.last_mut().expect("one part").push(Token::Char('"'));
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(Vec::new()),
                '*' if !quoted => parts.last_mut().expect("one part").push(Token::AnyRun),
                '?' if !quoted => parts.last_mut().expect("one part").push(Token::AnyOne),
                c if !quoted => parts.last_mut().expect("one part").extend(c.to_lowercase().map(Token::Char)),
                c => parts.last_mut().expect("one part").push(Token::Char(c)),
            }
        }
        let bad = |why: &str| Error::Invalid(format!("invalid table pattern {text:?}: {why}"));
        if quoted {
            return Err(bad("unterminated double quote"));
        }
        match parts.len() {
            1 if !parts[0].is_empty() => Ok(Pattern { schema: None, name: parts.remove(0) }),
            2 if !parts[1].is_empty() => {
                let name = parts.remove(1);
                Ok(Pattern { schema: Some(parts.remove(0)), name })
            }
            1 | 2 => Err(bad("it names no table")),
            _ => Err(bad("use NAME or SCHEMA.NAME (database-qualified names are not supported)")),
        }
    }

    /// Whether the table `schema.name` matches.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.schema.as_ref().is_none_or(|s| glob(s, &schema.chars().collect::<Vec<_>>()))
            && glob(&self.name, &name.chars().collect::<Vec<_>>())
    }
}

/// Patterns given for one option.
#[derive(Debug, Clone, Default)]
pub struct PatternSet(Vec<Pattern>);

impl PatternSet {
    /// Parses every pattern.
    pub fn parse(texts: &[String]) -> Result<PatternSet> {
        Ok(PatternSet(texts.iter().map(|t| Pattern::parse(t)).collect::<Result<_>>()?))
    }

    /// Parses database name patterns (`--exclude-database`): as table
    /// patterns, without a schema part.
    pub fn parse_names(texts: &[String]) -> Result<PatternSet> {
        let set = PatternSet::parse(texts)?;
        if let Some((text, _)) = texts.iter().zip(&set.0).find(|(_, p)| p.schema.is_some()) {
            return Err(Error::Invalid(format!(
                "invalid database pattern {text:?}: a database name has no schema part (quote a dot: \"a.b\")"
            )));
        }
        Ok(set)
    }

    /// Whether any pattern matches the unqualified name `name` (a database).
    pub fn any_name(&self, name: &str) -> bool {
        self.0.iter().any(|p| p.matches("", name))
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches.
    pub fn any(&self, schema: &str, name: &str) -> bool {
        self.0.iter().any(|p| p.matches(schema, name))
    }
}

fn glob(pattern: &[Token], text: &[char]) -> bool {
    // Classic two-pointer wildcard match with backtracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::AnyRun) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::AnyOne) => {
                p += 1;
                t += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, schema: &str, name: &str) -> bool {
        Pattern::parse(p).unwrap().matches(schema, name)
    }

    #[test]
    fn matches_like_pg_dump() {
        assert!(m("events", "public", "events"));
        assert!(m("EVENTS", "app", "events"));
        assert!(!m("\"EVENTS\"", "app", "events"));
        assert!(m("\"EVENTS\"", "app", "EVENTS"));
        assert!(m("public.ev*", "public", "events_2024"));
        assert!(!m("public.ev*", "app", "events"));
        assert!(m("*.t?", "x", "t1"));
        assert!(!m("*.t?", "x", "t12"));
        assert!(m("\"a.b\"", "s", "a.b"));
        assert!(m("\"we\"\"ird\"", "s", "we\"ird"));
        assert!(m("*", "s", ""));
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a.b.c").is_err());
        assert!(Pattern::parse("\"open").is_err());
        assert!(Pattern::parse("s.").is_err());
    }

    #[test]
    fn database_patterns_have_no_schema() {
        let set = PatternSet::parse_names(&["skip_*".into(), "\"Odd.Name\"".into()]).unwrap();
        assert!(set.any_name("skip_a") && set.any_name("Odd.Name"));
        assert!(!set.any_name("keep") && !set.any_name("odd.name"));
        assert!(PatternSet::parse_names(&["a.b".into()]).is_err());
        assert!(!PatternSet::parse_names(&[]).unwrap().any_name("x"));
    }
}
