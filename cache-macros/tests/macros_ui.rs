//! Compile-time errors of `#[cached(...)]` and `#[derive(CacheTags)]` (`*_tags*` files): every
//! rejected input fails with its error on the offending token (the `.stderr` files pin the
//! message and the caret). The forms each macro accepts are ordinary tests of cache-actix
//! (`cache-actix/tests/macros/`), so that trybuild only type-checks and never builds a binary.
//! The cases see cache-actix without its default `redis` feature, which none of them uses.

#[test]
fn macros_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail_*.rs");
}
