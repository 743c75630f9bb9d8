//! Any bytes as the JSON body of each face's routes (the first byte picks
//! the route), signed in as an administrator where the route needs it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame_fuzz::harness;

/// Routes that read a JSON body; `true`: with the administrator's token.
/// (Logout and the password change are left out: they would end the
/// harness's session.)
const ROUTES: [(&str, &str, bool); 12] = [
    ("POST", "/v1/login", false),
    ("POST", "/v1/refresh", false),
    ("PATCH", "/v1/me", true),
    ("POST", "/v1/admin/users", true),
    ("PATCH", "/v1/admin/users/2", true),
    ("POST", "/v1/admin/roles", true),
    ("PATCH", "/v1/admin/roles/user", true),
    ("POST", "/api/v1/login", false),
    ("POST", "/manager/login", false),
    ("POST", "/api/v1/users/actions/login", false),
    ("POST", "/user/login", false),
    ("POST", "/api/v1/user/method/login.user.user/", false),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path, signed_in) = ROUTES[usize::from(pick) % ROUTES.len()];
    let harness = harness();
    let token = signed_in.then_some(harness.access.as_str());
    harness.send_json(method, path, token, body);
});
