//! What a handler says about how its responses may be cached: [`CachePolicy`], the tag templates
//! it carries, and the duration syntax (`30`, `"30s"`, `"5m"`, `"1h"`) shared with `#[cached]`.
//!
//! What must stay true: a policy that exists is valid (non-zero ttl, lowercase header names,
//! balanced tag templates). The attribute macro checks the same rules at compile time by calling
//! the functions in this module.

use std::fmt;
use std::time::Duration;

/// Why a policy value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Parses `30`, `"30s"`, `"5m"`, `"1h"` or `"1d"` into a duration.
///
/// ```
/// use cache_core::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
/// assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
/// assert!(parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, PolicyError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = || {
        PolicyError(format!("invalid duration `{text}`: expected a number of seconds or e.g. \"30s\", \"5m\", \"1h\", \"1d\""))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Checks an HTTP header name (RFC 9110 token) and returns it lowercased.
///
/// ```
/// assert_eq!(cache_core::policy::header_name("Accept-Language").unwrap(), "accept-language");
/// assert!(cache_core::policy::header_name("bad header").is_err());
/// ```
pub fn header_name(name: &str) -> Result<String, PolicyError> {
    const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~";
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || TCHAR.contains(&b));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(PolicyError(format!(
            "`{name}` is not a valid HTTP header name"
        )))
    }
}

/// Checks a cookie name (an RFC 6265 token, the same characters as a header name). Cookie names
/// are case-sensitive, so it is returned as given.
///
/// ```
/// assert_eq!(cache_core::policy::cookie_name("SessionId").unwrap(), "SessionId");
/// assert!(cache_core::policy::cookie_name("a=b").is_err());
/// ```
pub fn cookie_name(name: &str) -> Result<String, PolicyError> {
    header_name(name)
        .map(|_| name.to_string())
        .map_err(|_| PolicyError(format!("`{name}` is not a valid cookie name")))
}

/// How a cookie appears in a vary list: `cookie:` and its name. No header name contains `:`,
/// so such an item can never be mistaken for a header.
pub const VARY_COOKIE_PREFIX: &str = "cookie:";

/// A tag with `{name}` placeholders filled from the route's match info, e.g. `product:{id}`.
///
/// ```
/// use cache_core::TagTemplate;
/// let t = TagTemplate::parse("product:{id}").unwrap();
/// assert_eq!(t.placeholders().collect::<Vec<_>>(), ["id"]);
/// assert_eq!(t.render(|name| (name == "id").then(|| "7".to_string())), "product:7");
/// assert!(TagTemplate::parse("product:{id").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    parts: Vec<TagPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TagPart {
    Text(String),
    Param(String),
}

impl TagTemplate {
    /// Parses a template. `{` and `}` must pair up around a non-empty name; there is no escape.
    pub fn parse(text: &str) -> Result<TagTemplate, PolicyError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(PolicyError(format!("unbalanced `}}` in tag `{text}`")));
            }
            if open > 0 {
                parts.push(TagPart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|i| after.as_bytes()[*i] == b'}');
            let Some(close) = close else {
                return Err(PolicyError(format!("unbalanced `{{` in tag `{text}`")));
            };
            let name = &after[..close];
            if name.is_empty() {
                return Err(PolicyError(format!("empty `{{}}` in tag `{text}`")));
            }
            parts.push(TagPart::Param(name.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TagPart::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err(PolicyError("empty tag".into()));
        }
        Ok(TagTemplate { parts })
    }

    /// The placeholder names, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TagPart::Param(name) => Some(name.as_str()),
            TagPart::Text(_) => None,
        })
    }

    /// Fills the placeholders; a name `lookup` does not know renders as an empty string.
    pub fn render(&self, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TagPart::Text(text) => out.push_str(text),
                TagPart::Param(name) => out.push_str(&lookup(name).unwrap_or_default()),
            }
        }
        out
    }
}

/// What clients and downstream caches are told in `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Neither `public` nor `private` is sent.
    #[default]
    Unspecified,
    /// `Cache-Control: public`; also lets a response to a request with `Authorization` be stored
    /// and shared without varying on it.
    Public,
    /// `Cache-Control: private`: only the client may keep it. Our own store still keeps it, with
    /// users separated by `vary`.
    Private,
}

/// How a response may be cached: the runtime form of `#[cached(...)]`.
///
/// ```
/// use cache_core::{CachePolicy, Visibility};
/// use std::time::Duration;
/// let policy = CachePolicy::new(Duration::from_secs(30))
///     .vary("Authorization")
///     .tag("products")
///     .tag("product:{id}")
///     .stale_while_revalidate(Duration::from_secs(10))
///     .visibility(Visibility::Private);
/// assert_eq!(policy.vary_headers(), ["authorization"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    ttl: Duration,
    vary: Vec<String>,
    tags: Vec<TagTemplate>,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    max_age: Option<Duration>,
    visibility: Visibility,
    extra_statuses: Vec<u16>,
}

impl CachePolicy {
    /// A policy with this time to live. A zero ttl is raised to one second: a policy that caches
    /// nothing is spelled by not having one (`#[cached]` rejects `ttl = 0` at compile time).
    pub fn new(ttl: Duration) -> CachePolicy {
        CachePolicy {
            ttl: ttl.max(Duration::from_secs(1)),
            vary: Vec::new(),
            tags: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            max_age: None,
            visibility: Visibility::Unspecified,
            extra_statuses: Vec::new(),
        }
    }

    /// Adds a request header the response varies on. An invalid name is ignored and logged;
    /// `#[cached]` rejects it at compile time.
    pub fn vary(mut self, header: &str) -> Self {
        match header_name(header) {
            Ok(name) if !self.vary.contains(&name) => self.vary.push(name),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "ignoring vary header"),
        }
        self
    }

    /// Keys on the value of one cookie (not on the whole `Cookie` header, which analytics
    /// cookies make different for every visitor). Call it once per cookie: the entry is then
    /// separated by those cookies' values, and a request without them shares the entry of other
    /// requests without them. An invalid name is ignored and logged; `#[cached]` rejects it at
    /// compile time.
    ///
    /// ```
    /// use cache_core::CachePolicy;
    /// let policy = CachePolicy::new(std::time::Duration::from_secs(30)).vary_cookie("sid");
    /// assert!(policy.varies_on_cookie());
    /// assert_eq!(policy.vary_headers(), ["cookie:sid"]);
    /// ```
    pub fn vary_cookie(mut self, cookie: &str) -> Self {
        match cookie_name(cookie) {
            Ok(name) => {
                let item = format!("{VARY_COOKIE_PREFIX}{name}");
                if !self.vary.contains(&item) {
                    self.vary.push(item);
                }
            }
            Err(err) => tracing::warn!(%err, "ignoring vary_cookie"),
        }
        self
    }

    /// Adds a tag; `{name}` is filled from the route's match info. An unbalanced template is
    /// ignored and logged; `#[cached]` rejects it at compile time.
    pub fn tag(mut self, template: &str) -> Self {
        match TagTemplate::parse(template) {
            Ok(t) => self.tags.push(t),
            Err(err) => tracing::warn!(%err, "ignoring tag"),
        }
        self
    }

    /// How long after the ttl a stale copy may be served while one refresh runs.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// How long after the ttl a stale copy may be served when the handler fails.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// The `max-age` told to clients; by default the whole ttl (answers carry `Age`, which
    /// clients subtract, so their copy goes stale when the cache's does).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// `public` or `private` in `Cache-Control`.
    pub fn visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Also stores responses with this status (by default only 200..=299 except 206).
    pub fn status(mut self, status: u16) -> Self {
        if !self.extra_statuses.contains(&status) {
            self.extra_statuses.push(status);
        }
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// What the response varies on: lowercase header names, and `cookie:<name>` for each
    /// [`CachePolicy::vary_cookie`].
    pub fn vary_headers(&self) -> &[String] {
        &self.vary
    }

    /// The tag templates.
    pub fn tag_templates(&self) -> &[TagTemplate] {
        &self.tags
    }

    /// The stale-while-revalidate window.
    pub fn stale_while_revalidate_window(&self) -> Duration {
        self.stale_while_revalidate
    }

    /// The stale-if-error window.
    pub fn stale_if_error_window(&self) -> Duration {
        self.stale_if_error
    }

    /// The explicit client `max-age`, if any.
    pub fn client_max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// `public`, `private` or neither.
    pub fn visibility_kind(&self) -> Visibility {
        self.visibility
    }

    /// Whether a response with this status may be stored.
    pub fn stores_status(&self, status: u16) -> bool {
        ((200..=299).contains(&status) && status != 206) || self.extra_statuses.contains(&status)
    }

    /// Whether the key separates requests by their cookies: a [`CachePolicy::vary_cookie`], or
    /// `vary("Cookie")` on the whole header.
    pub fn varies_on_cookie(&self) -> bool {
        self.vary
            .iter()
            .any(|v| v == "cookie" || v.starts_with(VARY_COOKIE_PREFIX))
    }

    /// Whether a response to a request carrying `Authorization` may be stored: only when the
    /// policy varies on it (each user gets their own entry) or says `public`.
    pub fn shares_authorized(&self) -> bool {
        self.visibility == Visibility::Public || self.vary.iter().any(|h| h == "authorization")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_reject_unbalanced_braces() {
        for bad in ["{", "}", "a{b", "a}b", "{}", "a{b{c}}", "{a}}"] {
            assert!(TagTemplate::parse(bad).is_err(), "{bad} should be rejected");
        }
        let t = TagTemplate::parse("{a}-{b}").unwrap();
        assert_eq!(t.render(|n| Some(n.to_uppercase())), "A-B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("-5").is_err());
    }
}
