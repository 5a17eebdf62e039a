//! Compile-time behaviour of `#[cached(...)]` and `#[derive(CacheTags)]` (`*_tags*` files): every
//! rejected input fails with its error on the offending token (the `.stderr` files pin the
//! message and the caret), and every accepted form compiles (against the real actix-web route
//! macros) and runs (`pass_tags.rs` asserts the tags each form gives).

#[test]
fn macros_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    cases.compile_fail("tests/ui/fail_*.rs");
}
