//! Key control on the middleware as a client sees it: `ignore_query`, `allow_query` and
//! `key_with` make two requests share an entry exactly when their rule says so, and never
//! otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{test, web, App, HttpRequest, HttpResponse};
use cache_actix::{Cache, CacheMiddleware, CachePolicy, Cached};
use cache_actix_tests::{get_path as get, send, Reply};

#[derive(Default)]
struct Calls(AtomicUsize);

/// Echoes the query it was given and the role header, with a run count, so that a shared entry
/// shows as the same body.
async fn echo(req: HttpRequest, calls: web::Data<Calls>) -> Cached<HttpResponse> {
    let n = calls.0.fetch_add(1, Ordering::SeqCst) + 1;
    let role = req
        .headers()
        .get("x-role")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string();
    Cached::new(
        HttpResponse::Ok().body(format!(
            "{} {} {role} run {n}",
            req.path(),
            req.query_string()
        )),
        CachePolicy::new(Duration::from_secs(60)),
    )
}

fn body(reply: &Reply) -> String {
    reply.text()
}

#[actix_web::test]
async fn ignored_parameters_share_one_entry_and_every_other_parameter_keeps_its_own() {
    let calls = web::Data::new(Calls::default());
    let app = test::init_service(
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(CacheMiddleware::new(Cache::memory()).ignore_query(["utm_*", "fbclid"]))
                .route("/p", web::get().to(echo)),
        ),
    )
    .await;
    let first = get(&app, "/p?id=1&utm_source=mail").await;
    assert_eq!(first.x_cache(), "MISS");
    for same in [
        "/p?id=1",
        "/p?utm_medium=x&id=1&fbclid=abc",
        "/p?id=1&utm%5Fcampaign=z",
    ] {
        let reply = get(&app, same).await;
        assert_eq!(
            (reply.x_cache(), body(&reply)),
            ("HIT", body(&first)),
            "{same}"
        );
    }
    // Not ignored: a different id, a name that only looks like a pattern, an unlisted name.
    for other in [
        "/p?id=2",
        "/p?id=1&utmx=1",
        "/p?id=1&fbclids=1",
        "/p?id=1&lang=fr",
    ] {
        let reply = get(&app, other).await;
        assert_eq!(
            reply.x_cache(),
            "MISS",
            "{other} shared an entry it must not"
        );
        assert_ne!(body(&reply), body(&first), "{other}");
    }
    assert_eq!(calls.0.load(Ordering::SeqCst), 5);
}

#[actix_web::test]
async fn an_allow_list_keys_only_its_parameters_under_its_prefix() {
    let calls = web::Data::new(Calls::default());
    let app = test::init_service(
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(CacheMiddleware::new(Cache::memory()).allow_query("/search", ["q", "page"]))
                .route("/search", web::get().to(echo))
                .route("/search/advanced", web::get().to(echo))
                .route("/searching", web::get().to(echo)),
        ),
    )
    .await;
    let first = get(&app, "/search?q=kettle&page=2&session=1").await;
    let same = get(&app, "/search?page=2&q=kettle&ref=mail&session=2").await;
    assert_eq!((same.x_cache(), body(&same)), ("HIT", body(&first)));
    let other_q = get(&app, "/search?q=teapot&page=2").await;
    assert_eq!(other_q.x_cache(), "MISS");
    // Under the prefix in whole segments only; outside it the whole query is keyed.
    let deep = get(&app, "/search/advanced?q=a&x=1").await;
    let deep_again = get(&app, "/search/advanced?q=a&x=2").await;
    assert_eq!(deep_again.x_cache(), "HIT", "x is not keyed under /search");
    assert_eq!(body(&deep_again), body(&deep));
    let outside = get(&app, "/searching?q=a&x=1").await;
    let outside_other = get(&app, "/searching?q=a&x=2").await;
    assert_eq!(
        outside_other.x_cache(),
        "MISS",
        "/searching is not under /search"
    );
    assert_ne!(body(&outside), body(&outside_other));
    assert_eq!(calls.0.load(Ordering::SeqCst), 5);
}

/// Attacker then victim: a member's page is never served to an anonymous client, while two
/// members with different tokens share one entry (the control that HITs).
#[actix_web::test]
async fn key_with_separates_roles_and_shares_within_one() {
    let calls = web::Data::new(Calls::default());
    let app = test::init_service(
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(CacheMiddleware::new(Cache::memory()).key_with(|req| {
                    let member = req.headers().get("x-role").is_some_and(|v| v == "member");
                    Some(if member { "member" } else { "anonymous" }.to_string())
                }))
                .route("/home", web::get().to(echo)),
        ),
    )
    .await;
    let with = |role: &'static str, token: &'static str| {
        test::TestRequest::get()
            .uri("/home")
            .insert_header(("x-role", role))
            .insert_header(("x-token", token))
    };
    let member = send(&app, with("member", "token-a")).await;
    assert!(body(&member).contains("member"));
    let anonymous = get(&app, "/home").await;
    assert_eq!(
        anonymous.x_cache(),
        "MISS",
        "an anonymous client got the member entry"
    );
    assert!(body(&anonymous).contains("anonymous"));
    // Any role the function does not call "member" is the anonymous entry.
    let guest = send(&app, with("guest", "token-z")).await;
    assert_eq!((guest.x_cache(), body(&guest)), ("HIT", body(&anonymous)));
    let other_member = send(&app, with("member", "token-b")).await;
    assert_eq!(
        (other_member.x_cache(), body(&other_member)),
        ("HIT", body(&member))
    );
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);
}

/// Attacker then victim: an encoded spelling of `/search` is routed to `/search`, so it must get
/// `/search`'s allow-list, not the laxer one of `/`; otherwise the attacker's `q` would be
/// dropped from the key and its page served for every `q`.
#[actix_web::test]
async fn an_encoded_path_gets_the_allow_list_of_the_path_it_is_routed_to() {
    let calls = web::Data::new(Calls::default());
    let app = test::init_service(
        App::new().app_data(calls.clone()).service(
            web::scope("")
                .wrap(
                    CacheMiddleware::new(Cache::memory())
                        .allow_query("/", ["page"])
                        .allow_query("/search", ["q"])
                        .allow_query("/search/", ["page"]),
                )
                .route("/search", web::get().to(echo)),
        ),
    )
    .await;
    let attacker = get(&app, "/%73earch?q=attacker&page=1").await;
    assert!(body(&attacker).contains("q=attacker"));
    let victim = get(&app, "/%73earch?q=kettle&page=1").await;
    assert_eq!(
        victim.x_cache(),
        "MISS",
        "the attacker's page answered another q"
    );
    assert!(body(&victim).contains("q=kettle"));
    // Control: the same q and page again is a HIT, and a parameter off the list shares it.
    let again = get(&app, "/%73earch?page=1&q=kettle&sid=7").await;
    assert_eq!((again.x_cache(), body(&again)), ("HIT", body(&victim)));
}

#[actix_web::test]
async fn an_empty_key_with_value_is_not_the_absent_one() {
    let app =
        test::init_service(
            App::new()
                .app_data(web::Data::new(Calls::default()))
                .service(
                    web::scope("")
                        .wrap(CacheMiddleware::new(Cache::memory()).key_with(|req| {
                            req.headers().contains_key("x-empty").then(String::new)
                        }))
                        .route("/home", web::get().to(echo)),
                ),
        )
        .await;
    let absent = get(&app, "/home").await;
    let empty = send(
        &app,
        test::TestRequest::get()
            .uri("/home")
            .insert_header(("x-empty", "1")),
    )
    .await;
    assert_eq!(empty.x_cache(), "MISS");
    assert_ne!(body(&empty), body(&absent));
    assert_eq!(get(&app, "/home").await.x_cache(), "HIT");
}
