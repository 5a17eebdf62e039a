//! Code generation for `#[cached(...)]`: checks the fn's shape, then rewrites it into an outer fn
//! with the same name, attributes and extractor types that wraps the original body's result in
//! `Cached::new(.., policy)`.
//!
//! What must stay true:
//! - the generated code names library items only through `::cache_actix` (users depend on that
//!   crate alone) and std items only through `::std`, so it compiles whatever the user imported;
//! - the outer fn keeps every other attribute in its original order, so actix's route macros and
//!   doc comments see the handler exactly as written, above or below `#[cached]`;
//! - the original body, patterns, generics and return type are kept verbatim in a nested fn, so
//!   `return`, `?` and borrow rules behave exactly as they did before the attribute was added.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Ident, ItemFn, Pat, PatIdent, ReturnType, Signature};

use crate::args::{CacheArgs, Visibility};

/// Rejects what cannot become a handler wrapper, with the span of the token to change.
pub(crate) fn check_fn(sig: &Signature) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |err: syn::Error| match &mut errors {
        Some(all) => all.combine(err),
        None => errors = Some(err),
    };
    if sig.asyncness.is_none() {
        push(syn::Error::new(
            sig.fn_token.span,
            "#[cached] requires an async fn",
        ));
    }
    for input in &sig.inputs {
        if let FnArg::Receiver(receiver) = input {
            push(syn::Error::new(
                receiver.span(),
                "#[cached] cannot be used on a method that takes `self`; use a free async fn",
            ));
        }
    }
    if let Some(variadic) = &sig.variadic {
        push(syn::Error::new(
            variadic.span(),
            "#[cached] cannot be used on a variadic fn",
        ));
    }
    // Actix rejects `()` as a handler output; saying so here names the actual fix.
    if matches!(sig.output, ReturnType::Default) {
        push(syn::Error::new(
            sig.ident.span(),
            "#[cached] needs a return type that implements Responder",
        ));
    }
    match errors {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Builds the wrapper. `func` must have passed [`check_fn`].
pub(crate) fn expand(args: &CacheArgs, func: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    // Mixed-site hygiene: these names can never collide with anything the user wrote.
    let inner_name = Ident::new("__cached_inner", Span::mixed_site());
    let policy_name = Ident::new("__cached_policy", Span::mixed_site());

    let mut inner_sig = sig.clone();
    inner_sig.ident = inner_name.clone();

    // The outer fn takes every argument under a plain name: actix only cares about the types,
    // and patterns such as `(a, b): (Path<u32>, Query<Q>)` stay in the inner fn where the body
    // expects them.
    let mut outer_sig = sig;
    let mut call_args = Vec::with_capacity(outer_sig.inputs.len());
    for (index, input) in outer_sig.inputs.iter_mut().enumerate() {
        if let FnArg::Typed(arg) = input {
            let name = format_ident!("__cached_arg{}", index, span = Span::mixed_site());
            // Parameter attributes (`#[allow(unused)]`, ...) describe the pattern, which now
            // lives in the inner fn.
            arg.attrs.clear();
            *arg.pat = Pat::Ident(PatIdent {
                attrs: Vec::new(),
                by_ref: None,
                mutability: None,
                ident: name.clone(),
                subpat: None,
            });
            call_args.push(name);
        }
    }
    if let ReturnType::Type(arrow, ty) = &outer_sig.output {
        let wrapped = quote_spanned!(ty.span()=> ::cache_actix::Cached<#ty>);
        outer_sig.output = ReturnType::Type(*arrow, Box::new(syn::Type::Verbatim(wrapped)));
    }

    // Type and const parameters are named explicitly in case one is not inferable from the
    // arguments (e.g. only used in the return type); lifetimes are left to inference because
    // naming a late-bound lifetime is an error.
    let turbofish_params: Vec<&Ident> = outer_sig
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(t) => Some(&t.ident),
            GenericParam::Const(c) => Some(&c.ident),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    let turbofish = if turbofish_params.is_empty() {
        TokenStream::new()
    } else {
        quote!(::<#(#turbofish_params),*>)
    };

    let policy = policy_tokens(args);
    quote! {
        #(#attrs)*
        #vis #outer_sig {
            #inner_sig #block
            let #policy_name = #policy;
            ::cache_actix::Cached::new(#inner_name #turbofish (#(#call_args),*).await, #policy_name)
        }
    }
}

/// The `CachePolicy` builder chain. Values were validated in `args`, so the runtime builders'
/// "log and ignore" paths are never taken for macro-built policies.
fn policy_tokens(args: &CacheArgs) -> TokenStream {
    let secs = |d: std::time::Duration| {
        let secs = d.as_secs();
        quote!(::std::time::Duration::from_secs(#secs))
    };
    let ttl = secs(args.ttl);
    let mut chain = quote!(::cache_actix::CachePolicy::new(#ttl));
    for header in &args.vary {
        chain.extend(quote!(.vary(#header)));
    }
    for cookie in &args.vary_cookie {
        chain.extend(quote!(.vary_cookie(#cookie)));
    }
    for tag in &args.tags {
        let lit = &tag.lit;
        chain.extend(quote!(.tag(#lit)));
    }
    if let Some(window) = args.stale_while_revalidate {
        let window = secs(window);
        chain.extend(quote!(.stale_while_revalidate(#window)));
    }
    if let Some(window) = args.stale_if_error {
        let window = secs(window);
        chain.extend(quote!(.stale_if_error(#window)));
    }
    if let Some(max_age) = args.max_age {
        let max_age = secs(max_age);
        chain.extend(quote!(.max_age(#max_age)));
    }
    match args.visibility {
        Some(Visibility::Public) => {
            chain.extend(quote!(.visibility(::cache_actix::Visibility::Public)));
        }
        Some(Visibility::Private) => {
            chain.extend(quote!(.visibility(::cache_actix::Visibility::Private)));
        }
        None => {}
    }
    for status in &args.statuses {
        chain.extend(quote!(.status(#status)));
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, func: &str) -> String {
        let args: CacheArgs = syn::parse_str(args).unwrap();
        let func: ItemFn = syn::parse_str(func).unwrap();
        check_fn(&func.sig).unwrap();
        expand(&args, func).to_string()
    }

    #[test]
    fn wraps_the_body_in_an_inner_fn() {
        let out = expand_str(
            "ttl = 30, tags = [\"product:{id}\"]",
            "/// Docs.\n#[get(\"/products/{id}\")]\npub async fn get_product(id: web::Path<u32>, db: web::Data<Db>) -> impl Responder { body(id, db) }",
        );
        let expected = quote! {
            #[doc = " Docs."]
            #[get("/products/{id}")]
            pub async fn get_product(__cached_arg0: web::Path<u32>, __cached_arg1: web::Data<Db>)
                -> ::cache_actix::Cached<impl Responder>
            {
                async fn __cached_inner(id: web::Path<u32>, db: web::Data<Db>) -> impl Responder { body(id, db) }
                let __cached_policy = ::cache_actix::CachePolicy::new(::std::time::Duration::from_secs(30u64))
                    .tag("product:{id}");
                ::cache_actix::Cached::new(__cached_inner(__cached_arg0, __cached_arg1).await, __cached_policy)
            }
        }
        .to_string();
        assert_eq!(out, expected);
    }

    #[test]
    fn patterns_stay_inside_and_generics_are_copied() {
        let out = expand_str(
            "ttl = 1",
            "async fn h<T: Default, const N: usize>((a, b): (Path<u32>, Query<T>), mut c: Data<X>) -> String { todo!() }",
        );
        assert!(out.contains("async fn h < T : Default , const N : usize > (__cached_arg0 : (Path < u32 > , Query < T >) , __cached_arg1 : Data < X >)"), "{out}");
        assert!(out.contains("async fn __cached_inner < T : Default , const N : usize > ((a , b) : (Path < u32 > , Query < T >) , mut c : Data < X >) -> String"), "{out}");
        assert!(
            out.contains("__cached_inner :: < T , N > (__cached_arg0 , __cached_arg1) . await"),
            "{out}"
        );
    }

    #[test]
    fn policy_has_every_key() {
        let out = expand_str(
            r#"ttl = "1h", vary = ["Authorization", "Accept-Language"], tags = ["a", "b:{id}"],
               stale_while_revalidate = 10, stale_if_error = "1m", max_age = 5, public, statuses = [404]"#,
            "async fn h() -> &'static str { \"x\" }",
        );
        let expected = quote! {
            ::cache_actix::CachePolicy::new(::std::time::Duration::from_secs(3600u64))
                .vary("authorization").vary("accept-language")
                .tag("a").tag("b:{id}")
                .stale_while_revalidate(::std::time::Duration::from_secs(10u64))
                .stale_if_error(::std::time::Duration::from_secs(60u64))
                .max_age(::std::time::Duration::from_secs(5u64))
                .visibility(::cache_actix::Visibility::Public)
                .status(404u16)
        }
        .to_string();
        assert!(out.contains(&expected), "{out}");
    }

    #[test]
    fn rejects_bad_shapes() {
        let sig = |src: &str| syn::parse_str::<ItemFn>(src).unwrap().sig;
        let msg = |src: &str| check_fn(&sig(src)).unwrap_err().to_string();
        assert_eq!(
            msg("fn h() -> String { todo!() }"),
            "#[cached] requires an async fn"
        );
        assert_eq!(
            msg("async fn h() {}"),
            "#[cached] needs a return type that implements Responder"
        );
        assert!(msg("async fn h(&self) -> String { todo!() }").contains("takes `self`"));
        assert_eq!(
            check_fn(&sig("fn h() {}")).unwrap_err().into_iter().count(),
            2
        );
    }
}
