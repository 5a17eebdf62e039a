//! `#[derive(CacheTags)]`: parsing of `#[cache_tags(prefix = "...")]` on the type and
//! `#[cache_tag]` / `#[cache_tag(prefix = "...")]` on its fields, and the generated impl of
//! `cache_actix::CacheTags`.
//!
//! What lives here: [`derive`], the derive's whole body.
//!
//! What must stay true: every rejection is a `syn::Error` spanned on the token to change, and all
//! of them are reported at once; prefixes pass `cache_core::check_tag_prefix`, the one rule; a
//! field's tag is `<prefix>:<value>` with the value through `Display`, so the tag equals what
//! `#[cached(tags = ["<prefix>:{param}"])]` renders from a route whose parameter prints the same.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, GenericArgument, Index, LitStr, Member, PathArguments, Type,
};

/// The type-level attribute.
const TYPE_ATTR: &str = "cache_tags";
/// The field-level attribute.
const FIELD_ATTR: &str = "cache_tag";

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
}

/// One tag a field gives: its prefix (the field's own, else the type's) and where it was asked.
struct FieldTag {
    member: Member,
    prefix: String,
    /// The field's type, or `T` of an `Option<T>` field.
    value_ty: Type,
    optional: bool,
    span: Span,
}

/// The impl of `CacheTags` for `input`, or its errors (with a stub impl beside them, so that
/// every use of the type does not add a "not implemented" error of its own).
pub(crate) fn derive(input: DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let type_prefix = type_prefix(&input.attrs, &mut errors);
    // A rejected type prefix has its own error; its fields need not say it is missing.
    let type_attr = input.attrs.iter().any(|a| a.path().is_ident(TYPE_ATTR));
    for attr in input.attrs.iter().filter(|a| a.path().is_ident(FIELD_ATTR)) {
        errors.push(syn::Error::new_spanned(
            attr,
            "`#[cache_tag]` marks a field; on the type, write `#[cache_tags(prefix = \"...\")]`",
        ));
    }

    let fields = match &input.data {
        Data::Struct(data) => Some(&data.fields),
        Data::Enum(data) => {
            errors.push(syn::Error::new(
                data.enum_token.span(),
                "#[derive(CacheTags)] supports structs only: implement `CacheTags` by hand for \
                 an enum, whose variants have different fields",
            ));
            None
        }
        Data::Union(data) => {
            errors.push(syn::Error::new(
                data.union_token.span(),
                "#[derive(CacheTags)] supports structs only, not unions",
            ));
            None
        }
    };

    let mut tags = Vec::new();
    if let Some(fields) = fields {
        for (index, field) in fields.iter().enumerate() {
            let member = match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => Member::Unnamed(Index {
                    index: index as u32,
                    span: field.ty.span(),
                }),
            };
            for attr in field.attrs.iter().filter(|a| a.path().is_ident(TYPE_ATTR)) {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "`#[cache_tags]` goes on the type; mark a field with `#[cache_tag]`",
                ));
            }
            let mut prefixes_seen = HashSet::new();
            for attr in field.attrs.iter().filter(|a| a.path().is_ident(FIELD_ATTR)) {
                let Some(own) = field_prefix(attr, &mut errors) else {
                    continue;
                };
                let prefix = match own {
                    Some(own) => own.value(),
                    None => match &type_prefix {
                        Some(prefix) => prefix.value(),
                        None if type_attr => continue,
                        None => {
                            errors.push(syn::Error::new_spanned(
                                attr,
                                "`#[cache_tag]` without a prefix takes the type's: add \
                                 `#[cache_tags(prefix = \"...\")]` to the type, or write \
                                 `#[cache_tag(prefix = \"...\")]`",
                            ));
                            continue;
                        }
                    },
                };
                if !prefixes_seen.insert(prefix.clone()) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        format!("this field already gives a `{prefix}:` tag"),
                    ));
                    continue;
                }
                let (value_ty, optional) = match option_inner(&field.ty) {
                    Some(inner) => (inner.clone(), true),
                    None => (field.ty.clone(), false),
                };
                let span = value_ty.span();
                tags.push(FieldTag {
                    member: member.clone(),
                    prefix,
                    value_ty,
                    optional,
                    span,
                });
            }
        }
        if tags.is_empty() && errors.0.is_none() {
            errors.push(syn::Error::new(
                input.ident.span(),
                "#[derive(CacheTags)] needs at least one field marked `#[cache_tag]` (its tag is \
                 `<prefix>:<value>`)",
            ));
        }
    }

    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    if let Some(err) = errors.0 {
        let err = err.into_compile_error();
        return quote! {
            #err
            impl #impl_generics ::cache_actix::CacheTags for #name #ty_generics #where_clause {
                fn cache_tags(&self) -> ::std::vec::Vec<::std::string::String> {
                    ::std::vec::Vec::new()
                }
            }
        };
    }

    // A generic field type needs `Display` said; a concrete one is checked by `format!` itself,
    // whose error names the field's type at the field.
    let generic = input.generics.type_params().next().is_some();
    let mut predicates: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(|p| quote!(#p)).collect())
        .unwrap_or_default();
    if generic {
        for tag in &tags {
            let ty = &tag.value_ty;
            predicates.push(quote_spanned!(tag.span=> #ty: ::std::fmt::Display));
        }
    }
    let where_clause = (!predicates.is_empty()).then(|| quote!(where #(#predicates),*));

    let count = tags.len();
    let pushes = tags.iter().map(|tag| {
        let member = &tag.member;
        // Checked by `check_tag_prefix`: no brace can reach the format string.
        let format = LitStr::new(&format!("{}:{{}}", tag.prefix), tag.span);
        let value = format_ident!("value", span = tag.span);
        if tag.optional {
            quote_spanned! {tag.span=>
                if let ::std::option::Option::Some(#value) = &self.#member {
                    tags.push(::std::format!(#format, #value));
                }
            }
        } else {
            quote_spanned! {tag.span=>
                tags.push(::std::format!(#format, &self.#member));
            }
        }
    });
    quote! {
        impl #impl_generics ::cache_actix::CacheTags for #name #ty_generics #where_clause {
            fn cache_tags(&self) -> ::std::vec::Vec<::std::string::String> {
                let mut tags = ::std::vec::Vec::with_capacity(#count);
                #(#pushes)*
                tags
            }
        }
    }
}

/// The prefix of `#[cache_tags(prefix = "...")]`, checked; errors for anything else.
fn type_prefix(attrs: &[Attribute], errors: &mut Errors) -> Option<LitStr> {
    let mut found: Option<LitStr> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident(TYPE_ATTR)) {
        if found.is_some() {
            errors.push(syn::Error::new_spanned(
                attr,
                "duplicate `#[cache_tags]`: give the type one prefix",
            ));
            continue;
        }
        match &attr.meta {
            syn::Meta::List(_) => {}
            _ => {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "expected `#[cache_tags(prefix = \"...\")]`",
                ));
                continue;
            }
        }
        match prefix_arg(attr, TYPE_ATTR) {
            Ok(Some(prefix)) => found = Some(prefix),
            Ok(None) => errors.push(syn::Error::new_spanned(
                attr,
                "expected `#[cache_tags(prefix = \"...\")]`",
            )),
            Err(err) => errors.push(err),
        }
    }
    found
}

/// `Some(None)` for a bare `#[cache_tag]`, `Some(Some(prefix))` for `#[cache_tag(prefix =
/// "...")]`, `None` (with the error pushed) for anything else.
fn field_prefix(attr: &Attribute, errors: &mut Errors) -> Option<Option<LitStr>> {
    match &attr.meta {
        syn::Meta::Path(_) => Some(None),
        syn::Meta::List(_) => match prefix_arg(attr, FIELD_ATTR) {
            Ok(Some(prefix)) => Some(Some(prefix)),
            Ok(None) => Some(None),
            Err(err) => {
                errors.push(err);
                None
            }
        },
        syn::Meta::NameValue(_) => {
            errors.push(syn::Error::new_spanned(
                attr,
                "expected `#[cache_tag]` or `#[cache_tag(prefix = \"...\")]`",
            ));
            None
        }
    }
}

/// The checked `prefix = "..."` of a list attribute: `Ok(None)` for an empty list.
fn prefix_arg(attr: &Attribute, what: &str) -> syn::Result<Option<LitStr>> {
    let mut prefix: Option<LitStr> = None;
    attr.parse_nested_meta(|meta| {
        if !meta.path.is_ident("prefix") {
            let key = meta
                .path
                .get_ident()
                .map_or_else(|| "?".to_string(), ToString::to_string);
            return Err(meta.error(format!(
                "unknown key `{key}` in #[{what}]; expected `prefix`"
            )));
        }
        if prefix.is_some() {
            return Err(meta.error("duplicate key `prefix`"));
        }
        let lit: LitStr = meta
            .value()
            .and_then(|v| v.parse())
            .map_err(|err| syn::Error::new(err.span(), "expected `prefix = \"...\"`"))?;
        cache_core::check_tag_prefix(&lit.value())
            .map_err(|err| syn::Error::new(lit.span(), err.to_string()))?;
        prefix = Some(lit);
        Ok(())
    })?;
    Ok(prefix)
}

/// `T` when `ty` is spelled `Option<T>` (or with its `std`/`core` path); an alias of `Option`
/// is not recognised, and then fails to compile since `Option` has no `Display`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let named = matches!(
        segments.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["Option"] | ["std", "option", "Option"] | ["core", "option", "Option"]
    );
    if !named {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>()[..] {
        [GenericArgument::Type(inner)] => Some(inner),
        _ => None,
    }
}
