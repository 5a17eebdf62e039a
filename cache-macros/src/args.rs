//! Parsing and validation of the `#[cached(...)]` arguments, and the check of tag placeholders
//! against the route of an actix route attribute on the same fn.
//!
//! What lives here: [`CacheArgs`], the checked form of the attribute, and [`check_tag_routes`].
//!
//! What must stay true: every rejection is a `syn::Error` spanned on the token the user has to
//! change (never a panic, never a call-site span when a better token exists), and every value that
//! reaches [`CacheArgs`] is one that `cache_core` accepts at run time, because the runtime builders
//! (`CachePolicy::vary`, `CachePolicy::tag`) only log and drop bad input. The validation rules are
//! `cache_core`'s own functions, so compile time and run time cannot disagree.

use std::collections::HashSet;
use std::time::Duration;

use cache_core::{
    parse_duration,
    policy::{cookie_name, header_name},
    TagTemplate,
};
use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Ident, Lit, LitInt, LitStr, Token};

/// Every key `#[cached]` knows, in the order the error message lists them.
pub(crate) const KEYS: &[&str] = &[
    "ttl",
    "vary",
    "vary_cookie",
    "tags",
    "stale_while_revalidate",
    "stale_if_error",
    "max_age",
    "private",
    "public",
    "statuses",
];

/// The route attributes of actix-web-codegen whose first argument is the path.
const ROUTE_MACROS: &[&str] = &[
    "get", "post", "put", "delete", "patch", "head", "options", "trace", "connect", "route",
];

/// The validated arguments of one `#[cached(...)]`.
#[derive(Debug)]
pub(crate) struct CacheArgs {
    pub ttl: Duration,
    /// Header names, already lowercased by `header_name`; each keeps its literal's span.
    pub vary: Vec<LitStr>,
    /// Cookie names (case kept), each with its literal's span.
    pub vary_cookie: Vec<LitStr>,
    pub tags: Vec<Tag>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub max_age: Option<Duration>,
    pub visibility: Option<Visibility>,
    pub statuses: Vec<u16>,
}

/// One tag: the literal (for spans and for the generated `.tag(..)`) and its parsed template.
#[derive(Debug)]
pub(crate) struct Tag {
    pub lit: LitStr,
    pub template: TagTemplate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    Public,
    Private,
}

/// `key` or `key = value`, before any key-specific check. Keys are read with `parse_any` so that a
/// keyword such as `type` is reported as an unknown key rather than as a confusing parse error.
struct RawArg {
    key: Ident,
    value: Option<Expr>,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(RawArg { key, value })
    }
}

impl Parse for CacheArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let raw = Punctuated::<RawArg, Token![,]>::parse_terminated(input)?;
        CacheArgs::from_raw(raw, input.span())
    }
}

/// Collects every error instead of stopping at the first, so one build shows all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(value),
        }
    }
}

impl CacheArgs {
    /// `missing_span` is where a missing `ttl` is reported: the attribute itself.
    fn from_raw(raw: Punctuated<RawArg, Token![,]>, missing_span: Span) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let mut seen = HashSet::new();
        let mut ttl = None;
        let mut args = CacheArgs {
            ttl: Duration::ZERO,
            vary: Vec::new(),
            vary_cookie: Vec::new(),
            tags: Vec::new(),
            stale_while_revalidate: None,
            stale_if_error: None,
            max_age: None,
            visibility: None,
            statuses: Vec::new(),
        };
        // The first of `public` / `private` that was switched on, to blame the second one.
        let mut visibility_key: Option<Ident> = None;

        for RawArg { key, value } in raw {
            let name = key.unraw().to_string();
            if !KEYS.contains(&name.as_str()) {
                errors.push(syn::Error::new(
                    key.span(),
                    format!("unknown key `{name}`; expected one of {}", KEYS.join(", ")),
                ));
                continue;
            }
            if !seen.insert(name.clone()) {
                errors.push(syn::Error::new(
                    key.span(),
                    format!("duplicate key `{name}`"),
                ));
                continue;
            }
            let result = match name.as_str() {
                "private" | "public" => flag(&key, value.as_ref()).and_then(|on| {
                    if !on {
                        return Ok(());
                    }
                    let this = if name == "private" {
                        Visibility::Private
                    } else {
                        Visibility::Public
                    };
                    if let Some(first) = &visibility_key {
                        return Err(syn::Error::new(
                            key.span(),
                            format!("`{name}` cannot be combined with `{first}`; choose one"),
                        ));
                    }
                    visibility_key = Some(key.clone());
                    args.visibility = Some(this);
                    Ok(())
                }),
                _ => match &value {
                    None => Err(syn::Error::new(
                        key.span(),
                        format!("`{name}` needs a value, e.g. `{name} = {}`", example(&name)),
                    )),
                    Some(value) => args.set(&name, value, &mut ttl),
                },
            };
            if let Err(err) = result {
                errors.push(err);
            }
        }

        match ttl {
            Some(ttl) => args.ttl = ttl,
            // Only worth saying when `ttl` was not given at all; a rejected `ttl` already has its
            // own error on its value.
            None if !seen.contains("ttl") => errors.push(syn::Error::new(
                missing_span,
                "#[cached] requires a `ttl`, e.g. `#[cached(ttl = 30)]` or `#[cached(ttl = \"5m\")]`",
            )),
            None => {}
        }
        errors.finish(args)
    }

    fn set(&mut self, name: &str, value: &Expr, ttl: &mut Option<Duration>) -> syn::Result<()> {
        match name {
            "ttl" => {
                let secs = duration(value)?;
                if secs.is_zero() {
                    return Err(syn::Error::new(
                        value.span(),
                        "ttl must be greater than zero",
                    ));
                }
                *ttl = Some(secs);
            }
            "stale_while_revalidate" => self.stale_while_revalidate = Some(duration(value)?),
            "stale_if_error" => self.stale_if_error = Some(duration(value)?),
            "max_age" => self.max_age = Some(duration(value)?),
            "vary" => {
                for lit in str_list(value, "header names")? {
                    let name = header_name(&lit.value())
                        .map_err(|err| syn::Error::new(lit.span(), err))?;
                    self.vary.push(LitStr::new(&name, lit.span()));
                }
            }
            "vary_cookie" => {
                for lit in str_list(value, "cookie names")? {
                    let name = cookie_name(&lit.value())
                        .map_err(|err| syn::Error::new(lit.span(), err))?;
                    self.vary_cookie.push(LitStr::new(&name, lit.span()));
                }
            }
            "tags" => {
                for lit in str_list(value, "tags")? {
                    let template = TagTemplate::parse(&lit.value())
                        .map_err(|err| syn::Error::new(lit.span(), err))?;
                    self.tags.push(Tag { lit, template });
                }
            }
            "statuses" => {
                for lit in int_list(value)? {
                    let status = lit
                        .base10_parse::<u16>()
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| {
                            syn::Error::new(lit.span(), "a status code must be in 100..=599")
                        })?;
                    self.statuses.push(status);
                }
            }
            // `from_raw` only calls this for the value-taking members of `KEYS`.
            other => {
                return Err(syn::Error::new(
                    value.span(),
                    format!("`{other}` takes no value"),
                ))
            }
        }
        Ok(())
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "vary" => "\"Authorization\"",
        "vary_cookie" => "\"session\"",
        "tags" => "[\"products\"]",
        "statuses" => "[404]",
        _ => "30",
    }
}

/// Macro-generated attributes can wrap a literal in an invisible group; look through it.
fn ungroup(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(group) => ungroup(&group.expr),
        other => other,
    }
}

/// `30`, `30s` (a suffixed integer token is valid macro input), or `"30s"` / `"5m"` / `"1h"` /
/// `"1d"`.
fn duration(value: &Expr) -> syn::Result<Duration> {
    let text = match ungroup(value) {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Int(int) => format!("{}{}", int.base10_digits(), int.suffix()),
            Lit::Str(s) => s.value(),
            _ => return Err(expected_duration(value)),
        },
        _ => return Err(expected_duration(value)),
    };
    parse_duration(&text).map_err(|err| syn::Error::new(value.span(), err))
}

fn expected_duration(value: &Expr) -> syn::Error {
    syn::Error::new(
        value.span(),
        "expected a number of seconds or a duration string such as \"30s\", \"5m\", \"1h\", \"1d\"",
    )
}

/// A bare flag is `true`; `= true` / `= false` are accepted so that a flag can be computed by a
/// macro_rules wrapper.
fn flag(key: &Ident, value: Option<&Expr>) -> syn::Result<bool> {
    let Some(value) = value else { return Ok(true) };
    match ungroup(value) {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Bool(b) => Ok(b.value),
            _ => Err(syn::Error::new(
                value.span(),
                format!("expected `{key}` or `{key} = true`"),
            )),
        },
        _ => Err(syn::Error::new(
            value.span(),
            format!("expected `{key}` or `{key} = true`"),
        )),
    }
}

/// One string literal or an array of them.
fn str_list(value: &Expr, what: &str) -> syn::Result<Vec<LitStr>> {
    let expected = |span: Span| {
        syn::Error::new(
            span,
            format!("expected a string literal or a list of them ({what})"),
        )
    };
    let one = |expr: &Expr| match ungroup(expr) {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(s) => Ok(s.clone()),
            _ => Err(expected(expr.span())),
        },
        _ => Err(expected(expr.span())),
    };
    match ungroup(value) {
        Expr::Array(array) => array.elems.iter().map(one).collect(),
        _ => one(value).map(|lit| vec![lit]),
    }
}

/// One integer literal or an array of them.
fn int_list(value: &Expr) -> syn::Result<Vec<LitInt>> {
    let one = |expr: &Expr| match ungroup(expr) {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Int(int) => Ok(int.clone()),
            _ => Err(syn::Error::new(
                expr.span(),
                "expected a status code such as 404",
            )),
        },
        _ => Err(syn::Error::new(
            expr.span(),
            "expected a status code such as 404",
        )),
    };
    match ungroup(value) {
        Expr::Array(array) => array.elems.iter().map(one).collect(),
        _ => one(value).map(|lit| vec![lit]),
    }
}

/// Checks that every `{name}` of every tag is a parameter of every actix route attribute on the
/// fn. Only attributes still present can be checked: when `#[cached]` sits below `#[get]`, actix
/// has already consumed the route, and the check silently does not apply.
pub(crate) fn check_tag_routes(args: &CacheArgs, attrs: &[Attribute]) -> syn::Result<()> {
    let mut errors = Errors::default();
    for route in attrs.iter().filter_map(route_path) {
        let pattern = route.value();
        let params = route_params(&pattern);
        for tag in &args.tags {
            for name in tag.template.placeholders() {
                if !params.contains(&name) {
                    errors.push(syn::Error::new(
                        tag.lit.span(),
                        format!(
                            "tag placeholder `{{{name}}}` is not a parameter of route {pattern:?}"
                        ),
                    ));
                }
            }
        }
    }
    errors.finish(())
}

/// The path literal of an actix-web route attribute (`get`, ..., `route`, bare or as
/// `actix_web::get`), or `None` for any other attribute or an unexpected argument shape: an
/// attribute we do not understand is actix's to reject, not ours.
fn route_path(attr: &Attribute) -> Option<LitStr> {
    let path = attr.path();
    let last = path.segments.last()?;
    let prefix_ok = match path.segments.len() {
        1 => path.leading_colon.is_none(),
        2 => path.segments[0].ident == "actix_web",
        _ => false,
    };
    if !prefix_ok || !ROUTE_MACROS.iter().any(|m| last.ident == m) {
        return None;
    }
    attr.parse_args_with(|input: ParseStream| {
        let lit: LitStr = input.parse()?;
        input.parse::<TokenStream>()?;
        Ok(lit)
    })
    .ok()
}

/// The parameter names of an actix route pattern, read the way actix-router reads them: `{name}`,
/// `{name:regex}` where the regex may itself contain balanced braces, and `{name}*` tails.
pub(crate) fn route_params(pattern: &str) -> Vec<&str> {
    let mut params = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let segment = &rest[open..];
        let mut depth = 0usize;
        let close = segment.find(|c| match c {
            '{' => {
                depth += 1;
                false
            }
            '}' => {
                depth -= 1;
                depth == 0
            }
            _ => false,
        });
        // A malformed pattern makes actix panic at startup; we only stop reading it.
        let Some(close) = close else { break };
        let inner = &segment[1..close];
        params.push(inner.split(':').next().unwrap_or(inner));
        rest = &segment[close + 1..];
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> syn::Result<CacheArgs> {
        syn::parse_str::<CacheArgs>(src)
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(args) => panic!("`{src}` should be rejected, got {args:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse("ttl = 30").unwrap().ttl, Duration::from_secs(30));
        assert_eq!(parse("ttl = \"30s\"").unwrap().ttl, Duration::from_secs(30));
        assert_eq!(parse("ttl = \"5m\"").unwrap().ttl, Duration::from_secs(300));
        assert_eq!(
            parse("ttl = \"1h\"").unwrap().ttl,
            Duration::from_secs(3600)
        );
        assert_eq!(
            parse("ttl = \"1d\"").unwrap().ttl,
            Duration::from_secs(86_400)
        );
        assert_eq!(parse("ttl = 5m").unwrap().ttl, Duration::from_secs(300));
        assert_eq!(parse("ttl = 30,").unwrap().ttl, Duration::from_secs(30));
    }

    #[test]
    fn ttl_rejections() {
        assert_eq!(err("ttl = 0"), "ttl must be greater than zero");
        assert_eq!(err("ttl = \"0s\""), "ttl must be greater than zero");
        assert!(err("ttl = \"5 parsecs\"").contains("invalid duration"));
        assert!(err("ttl = 30u8").contains("invalid duration"));
        assert!(err("ttl = -5").contains("expected a number of seconds"));
        assert!(err("ttl = 1.5").contains("expected a number of seconds"));
        assert!(err("ttl").contains("`ttl` needs a value"));
        assert!(err("").contains("requires a `ttl`"));
        assert!(err("vary = \"Accept\"").contains("requires a `ttl`"));
    }

    #[test]
    fn every_key() {
        let args = parse(
            r#"ttl = "5m", vary = ["Authorization", "Accept-Language"], tags = ["products", "product:{id}"],
               stale_while_revalidate = 10, stale_if_error = "1m", max_age = 0, private,
               statuses = [404, 301]"#,
        )
        .unwrap();
        assert_eq!(args.ttl, Duration::from_secs(300));
        let vary: Vec<_> = args.vary.iter().map(LitStr::value).collect();
        assert_eq!(vary, ["authorization", "accept-language"]);
        let tags: Vec<_> = args.tags.iter().map(|t| t.lit.value()).collect();
        assert_eq!(tags, ["products", "product:{id}"]);
        assert_eq!(
            args.tags[1].template.placeholders().collect::<Vec<_>>(),
            ["id"]
        );
        assert_eq!(args.stale_while_revalidate, Some(Duration::from_secs(10)));
        assert_eq!(args.stale_if_error, Some(Duration::from_secs(60)));
        assert_eq!(args.max_age, Some(Duration::ZERO));
        assert_eq!(args.visibility, Some(Visibility::Private));
        assert_eq!(args.statuses, [404, 301]);
    }

    #[test]
    fn single_values_and_defaults() {
        let args = parse("ttl = 1, vary = \"Accept\", tags = \"all\"").unwrap();
        assert_eq!(args.vary[0].value(), "accept");
        assert_eq!(args.tags[0].lit.value(), "all");
        assert_eq!(args.visibility, None);
        assert_eq!(args.stale_while_revalidate, None);
        assert!(args.statuses.is_empty());
    }

    #[test]
    fn visibility_flags() {
        assert_eq!(
            parse("ttl = 1, public").unwrap().visibility,
            Some(Visibility::Public)
        );
        assert_eq!(
            parse("ttl = 1, private = true").unwrap().visibility,
            Some(Visibility::Private)
        );
        assert_eq!(parse("ttl = 1, private = false").unwrap().visibility, None);
        assert_eq!(
            parse("ttl = 1, private = false, public")
                .unwrap()
                .visibility,
            Some(Visibility::Public)
        );
        assert!(err("ttl = 1, private, public").contains("cannot be combined with `private`"));
        assert!(err("ttl = 1, public = 1").contains("expected `public` or `public = true`"));
    }

    #[test]
    fn unknown_and_duplicate_keys() {
        assert_eq!(
            err("ttl = 1, foo = 2"),
            "unknown key `foo`; expected one of ttl, vary, vary_cookie, tags, \
             stale_while_revalidate, stale_if_error, max_age, private, public, statuses"
        );
        assert!(err("ttl = 1, type = 2").contains("unknown key `type`"));
        assert_eq!(err("ttl = 1, ttl = 2"), "duplicate key `ttl`");
        assert_eq!(err("ttl = 1, private, private"), "duplicate key `private`");
    }

    #[test]
    fn vary_and_tag_validation() {
        assert!(err("ttl = 1, vary = \"bad header\"").contains("not a valid HTTP header name"));
        assert!(err("ttl = 1, vary = [\"Accept\", \"\"]").contains("not a valid HTTP header name"));
        assert!(err("ttl = 1, vary = 3").contains("expected a string literal"));
        assert!(err("ttl = 1, vary_cookie = \"a=b\"").contains("not a valid cookie name"));
        let args = parse("ttl = 1, vary_cookie = [\"SessionId\", \"lang\"]").unwrap();
        let cookies: Vec<_> = args.vary_cookie.iter().map(LitStr::value).collect();
        assert_eq!(
            cookies,
            ["SessionId", "lang"],
            "cookie names keep their case"
        );
        assert!(err("ttl = 1, tags = [\"product:{id\"]").contains("unbalanced `{`"));
        assert!(err("ttl = 1, tags = [\"a}\"]").contains("unbalanced `}`"));
        assert!(err("ttl = 1, tags = [products]").contains("expected a string literal"));
    }

    #[test]
    fn statuses() {
        assert_eq!(parse("ttl = 1, statuses = 404").unwrap().statuses, [404]);
        assert!(err("ttl = 1, statuses = [600]").contains("100..=599"));
        assert!(err("ttl = 1, statuses = [99]").contains("100..=599"));
        assert!(err("ttl = 1, statuses = [70000]").contains("100..=599"));
        assert!(err("ttl = 1, statuses = [\"404\"]").contains("expected a status code"));
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let all = parse("ttl = 0, foo, vary = \"a b\"").unwrap_err();
        assert_eq!(all.into_iter().count(), 3);
    }

    #[test]
    fn reads_route_params_like_actix() {
        assert_eq!(route_params("/products/{id}"), ["id"]);
        assert_eq!(route_params("/a/{x}/b/{y:\\d+}"), ["x", "y"]);
        assert_eq!(route_params("/n/{id:\\d{3}}/{rest}"), ["id", "rest"]);
        assert_eq!(route_params("/static/{tail}*"), ["tail"]);
        assert!(route_params("/plain").is_empty());
        assert!(route_params("/broken/{id").is_empty());
    }

    fn attrs(src: &str) -> Vec<Attribute> {
        let func: syn::ItemFn = syn::parse_str(&format!("{src} async fn f() {{}}")).unwrap();
        func.attrs
    }

    #[test]
    fn tag_placeholders_must_be_route_params() {
        let args = parse("ttl = 1, tags = [\"products\", \"product:{id}\"]").unwrap();
        assert!(check_tag_routes(&args, &attrs("#[get(\"/products/{id}\")]")).is_ok());
        assert!(check_tag_routes(&args, &attrs("#[actix_web::get(\"/p/{id:\\\\d+}\")]")).is_ok());
        assert!(check_tag_routes(&args, &attrs("#[route(\"/p/{id}\", method = \"GET\")]")).is_ok());
        assert!(check_tag_routes(&args, &attrs("#[doc = \"/nothing\"]")).is_ok());
        // Not actix's: left alone.
        assert!(check_tag_routes(&args, &attrs("#[other::get(\"/x\")]")).is_ok());

        let slug = parse("ttl = 1, tags = [\"product:{slug}\"]").unwrap();
        let err = check_tag_routes(&slug, &attrs("#[get(\"/products/{id}\")]")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tag placeholder `{slug}` is not a parameter of route \"/products/{id}\""
        );
        assert!(check_tag_routes(&slug, &attrs("#[post(\"/a/{slug}\")]")).is_ok());
    }
}
