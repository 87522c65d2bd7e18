//! `POST /mags-cron` without a server: the body, its fields' checks and
//! the in-house cron expression parser. A parsed expression's next fire
//! time is always later than the time asked about, and on a minute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mags_api::CronCreateRequest;
use mags_control::cron::expr::CronExpr;
use mags_server::error::parse_json_object;
use mags_server::routes::cron::check_fields;

fuzz_target!(|data: &[u8]| {
    // The expression alone, from raw text.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(expr) = CronExpr::parse(text) {
            let at = 1_700_000_000_000;
            if let Some(next) = expr.next_after(at) {
                assert!(next > at, "{text:?}");
                assert_eq!(next % 60_000, 0, "{text:?}");
            }
        }
    }
    // The whole request.
    if let Ok(req) = parse_json_object::<CronCreateRequest>(data) {
        let _ = CronExpr::parse(&req.cron_expression);
        let _ = check_fields(
            &req.name,
            &req.script,
            req.persistent,
            req.workspace_id.as_deref(),
            &req.environment,
        );
    }
});
