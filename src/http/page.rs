//! The hosted pages of the OpenID Connect face: sign-in, sign-out and
//! errors. Server-rendered HTML that works without JavaScript, in English or
//! Chinese by `Accept-Language`, with a strict Content-Security-Policy (the
//! one inline stylesheet is allowed by its hash; nothing else loads).

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The language the browser prefers most among English and Chinese
    /// (`Accept-Language` with q-values); English when it names neither.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut best = (0.0f32, Lang::En);
        for value in headers.get_all(header::ACCEPT_LANGUAGE) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let lang = if tag == "zh" || tag.starts_with("zh-") {
                    Lang::Zh
                } else if tag == "en" || tag.starts_with("en-") {
                    Lang::En
                } else {
                    continue;
                };
                if q > best.0 {
                    best = (q, lang);
                }
            }
        }
        best.1
    }

    fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }
}

/// The words of the pages (one field per phrase; the names say where).
#[allow(missing_docs)]
pub struct Text {
    pub title: &'static str,
    pub heading: &'static str,
    pub login: &'static str,
    pub password: &'static str,
    pub submit: &'static str,
    pub continue_to: &'static str,
    pub invalid: &'static str,
    pub throttled: &'static str,
    pub busy: &'static str,
    pub expired_form: &'static str,
    pub error_title: &'static str,
    pub signed_out: &'static str,
    pub sign_out_title: &'static str,
    pub sign_out_question: &'static str,
    pub sign_out_button: &'static str,
    pub confirm_title: &'static str,
    pub signed_in_as: &'static str,
    pub confirm_note: &'static str,
    pub confirm_button: &'static str,
    pub switch_button: &'static str,
    pub cancel_button: &'static str,
}

/// The page texts in `lang`.
pub fn text(lang: Lang) -> &'static Text {
    match lang {
        Lang::En => &Text {
            title: "Sign in",
            heading: "Sign in",
            login: "Username, email or mobile",
            password: "Password",
            submit: "Sign in",
            continue_to: "to continue to",
            invalid: "The login or password is incorrect.",
            throttled: "Too many attempts. Please wait a moment and try again.",
            busy: "The service is busy. Please try again in a moment.",
            expired_form: "This form has expired. Please sign in again.",
            error_title: "Sign-in request refused",
            signed_out: "You have signed out.",
            sign_out_title: "Sign out",
            sign_out_question: "Do you want to sign out?",
            sign_out_button: "Sign out",
            confirm_title: "Confirm sign-in",
            signed_in_as: "You are signed in as",
            confirm_note: "Continue only if you started signing in to this application just now.",
            confirm_button: "Continue",
            switch_button: "Use another account",
            cancel_button: "Cancel",
        },
        Lang::Zh => &Text {
            title: "登录",
            heading: "登录",
            login: "用户名、邮箱或手机号",
            password: "密码",
            submit: "登录",
            continue_to: "以继续访问",
            invalid: "账号或密码不正确。",
            throttled: "尝试次数过多，请稍后再试。",
            busy: "服务繁忙，请稍后再试。",
            expired_form: "表单已过期，请重新登录。",
            error_title: "登录请求被拒绝",
            signed_out: "您已退出登录。",
            sign_out_title: "退出登录",
            sign_out_question: "确定要退出登录吗？",
            sign_out_button: "退出登录",
            confirm_title: "确认登录",
            signed_in_as: "当前登录账号",
            confirm_note: "仅当您刚刚发起登录此应用时，才请继续。",
            confirm_button: "继续",
            switch_button: "使用其他账号",
            cancel_button: "取消",
        },
    }
}

/// Why a hosted page refuses a request, said to the person in front of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `client_id`.
    MissingClient,
    /// No such client.
    UnknownClient,
    /// No `redirect_uri` where one is needed.
    MissingRedirect,
    /// A `redirect_uri` the client did not register.
    UnregisteredRedirect,
    /// `state` too long.
    StateTooLong,
    /// Parameters that do not parse.
    Malformed,
    /// A parameter given twice.
    Repeated(String),
    /// A form body of another type.
    NotForm,
    /// A method the page does not take.
    Method,
    /// A body over the size limit.
    TooLarge,
    /// A body that could not be read (cut off).
    Unreadable,
    /// A body that did not arrive within `http.request_timeout`.
    TimedOut,
    /// An `id_token_hint` Sesame did not sign.
    BadHint,
    /// A `post_logout_redirect_uri` the client did not register.
    UnregisteredLogoutTarget,
    /// A `post_logout_redirect_uri` with no client to check it against.
    LogoutTargetWithoutClient,
    /// `client_id` and `id_token_hint` name different clients.
    ClientMismatch,
    /// A confirmation form without one of its buttons.
    NoChoice,
}

impl Refusal {
    /// The sentence in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        let (en, zh) = match self {
            Refusal::MissingClient => (
                "The request names no application (client_id).",
                "请求未指明应用（client_id）。",
            ),
            Refusal::UnknownClient => (
                "The application (client_id) is not registered.",
                "该应用（client_id）未注册。",
            ),
            Refusal::MissingRedirect => (
                "The request names no return address (redirect_uri).",
                "请求未指明返回地址（redirect_uri）。",
            ),
            Refusal::UnregisteredRedirect => (
                "The return address (redirect_uri) is not registered for this application.",
                "该返回地址（redirect_uri）未为此应用注册。",
            ),
            Refusal::StateTooLong => ("The state parameter is too long.", "state 参数过长。"),
            Refusal::Malformed => (
                "The request's parameters are malformed.",
                "请求参数格式错误。",
            ),
            Refusal::Repeated(name) => {
                return match lang {
                    Lang::En => format!("The parameter {name} is given more than once."),
                    Lang::Zh => format!("参数 {name} 出现了多次。"),
                };
            }
            Refusal::NotForm => (
                "The form was sent in an unexpected format.",
                "表单提交格式不正确。",
            ),
            Refusal::Method => (
                "This page does not take that kind of request.",
                "此页面不接受该请求方式。",
            ),
            Refusal::TooLarge => ("The form is too large.", "表单内容过大。"),
            Refusal::Unreadable => ("The form could not be read.", "无法读取表单。"),
            Refusal::TimedOut => ("The form did not arrive in time.", "表单提交超时。"),
            Refusal::BadHint => (
                "The sign-out request is not valid (id_token_hint).",
                "退出请求无效（id_token_hint）。",
            ),
            Refusal::UnregisteredLogoutTarget => (
                "The address to return to after signing out is not registered for this application.",
                "退出后的返回地址未为此应用注册。",
            ),
            Refusal::LogoutTargetWithoutClient => (
                "The sign-out request names a return address but no application.",
                "退出请求指明了返回地址，但未指明应用。",
            ),
            Refusal::ClientMismatch => (
                "The sign-out request names two different applications.",
                "退出请求指明了两个不同的应用。",
            ),
            Refusal::NoChoice => (
                "The form was sent without a choice.",
                "表单提交时未做选择。",
            ),
        };
        match lang {
            Lang::En => en.to_owned(),
            Lang::Zh => zh.to_owned(),
        }
    }
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
background:#f3f4f6;color:#111827;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",\
\"PingFang SC\",\"Microsoft YaHei\",sans-serif}\
main{width:100%;max-width:24rem;margin:1rem;padding:2rem;background:#fff;border-radius:.75rem;\
box-shadow:0 1px 3px rgba(0,0,0,.1),0 8px 24px rgba(0,0,0,.06)}\
h1{margin:0 0 .25rem;font-size:1.5rem}\
.client{margin:0 0 1.5rem;color:#4b5563;font-size:.95rem;overflow-wrap:break-word}\
label{display:block;margin:1rem 0 .35rem;font-weight:600;font-size:.95rem}\
input{width:100%;padding:.65rem .75rem;font:inherit;border:1px solid #9ca3af;border-radius:.5rem;\
background:#fff;color:inherit}\
input:focus{outline:3px solid #93c5fd;outline-offset:1px;border-color:#2563eb}\
input[aria-invalid=true]{border-color:#b91c1c}\
.error{margin:1rem 0 0;padding:.6rem .75rem;border-radius:.5rem;background:#fef2f2;\
color:#991b1b;font-size:.95rem}\
button{width:100%;margin-top:1.5rem;padding:.7rem;font:inherit;font-weight:600;color:#fff;\
background:#1d4ed8;border:0;border-radius:.5rem;cursor:pointer}\
button:hover{background:#1e40af}\
button:focus-visible{outline:3px solid #93c5fd;outline-offset:2px}\
button.secondary{margin-top:.75rem;color:#1d4ed8;background:transparent;border:1px solid #9ca3af}\
button.secondary:hover{background:#eff6ff}\
p.account{margin:0 0 .5rem;font-size:1.05rem;overflow-wrap:anywhere}\
p.note{margin:0;color:#374151}\
@media (prefers-color-scheme:dark){body{background:#111827;color:#f9fafb}\
main{background:#1f2937;box-shadow:none}.client,p.note{color:#d1d5db}\
button.secondary{color:#bfdbfe;border-color:#6b7280}button.secondary:hover{background:#111827}\
input{background:#111827;border-color:#6b7280}.error{background:#450a0a;color:#fecaca}}";

static STYLE_HASH: LazyLock<String> =
    LazyLock::new(|| format!("'sha256-{}'", STANDARD.encode(Sha256::digest(STYLE))));

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete page: `body` inside the layout, with the headers every hosted
/// page carries. `form_targets` are the origins a form on it may lead to
/// (a redirect after a form counts for `form-action`).
pub fn render(
    status: StatusCode,
    lang: Lang,
    title: &str,
    body: &str,
    form_targets: &[String],
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        lang = lang.tag(),
        title = escape(title),
    );
    let mut form_action = String::from("'self'");
    for target in form_targets {
        form_action.push(' ');
        form_action.push_str(target);
    }
    let csp = format!(
        "default-src 'none'; style-src {style}; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'",
        style = &*STYLE_HASH,
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // nosniff, no-referrer and no-store come with every answer
    // (`headers::harden`, in the observe layer).
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept-Language, Cookie"),
    );
    response
}

/// The sign-in form.
pub struct SignInForm<'a> {
    /// Hidden fields: the authorization request and the CSRF token.
    pub hidden: &'a [(&'a str, String)],
    /// The client's name, shown under the heading.
    pub client: &'a str,
    /// Where the form posts: the sign-in route under the issuer's path.
    pub action: &'a str,
    /// Pre-filled login (`login_hint`, or what was typed).
    pub login: Option<&'a str>,
    /// An error to show, bound to the fields.
    pub error: Option<&'a str>,
}

/// Appends a form's hidden fields to `body`.
fn push_hidden(body: &mut String, hidden: &[(&str, String)]) {
    for (name, value) in hidden {
        body.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        ));
    }
}

/// The sign-in page body.
pub fn sign_in_body(lang: Lang, form: &SignInForm<'_>) -> String {
    let t = text(lang);
    let mut body = format!(
        "<h1>{heading}</h1><p class=\"client\">{continue_to} <strong>{client}</strong></p>\
         <form method=\"post\" action=\"{action}\" novalidate>",
        heading = escape(t.heading),
        continue_to = escape(t.continue_to),
        client = escape(form.client),
        action = escape(form.action),
    );
    push_hidden(&mut body, form.hidden);
    let invalid = if form.error.is_some() {
        " aria-invalid=\"true\" aria-describedby=\"error\""
    } else {
        ""
    };
    let (login_focus, password_focus) = if form.login.is_some_and(|l| !l.is_empty()) {
        ("", " autofocus")
    } else {
        (" autofocus", "")
    };
    body.push_str(&format!(
        "<label for=\"login\">{login_label}</label>\
         <input id=\"login\" name=\"login\" type=\"text\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" required maxlength=\"320\" \
         value=\"{login}\"{invalid}{login_focus}>\
         <label for=\"password\">{password_label}</label>\
         <input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required maxlength=\"1024\"{invalid}{password_focus}>",
        login_label = escape(t.login),
        password_label = escape(t.password),
        login = escape(form.login.unwrap_or_default()),
    ));
    if let Some(error) = form.error {
        body.push_str(&format!(
            "<p id=\"error\" class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        ));
    }
    body.push_str(&format!(
        "<button type=\"submit\">{}</button></form>",
        escape(t.submit)
    ));
    body
}

/// The page where a signed-in user confirms a sign-in to a client.
pub struct ConfirmForm<'a> {
    /// Hidden fields: the authorization request, the CSRF token and the
    /// account shown.
    pub hidden: &'a [(&'a str, String)],
    /// The client's name.
    pub client: &'a str,
    /// The username signed in.
    pub username: &'a str,
    /// Where the form posts.
    pub action: &'a str,
}

/// The confirmation page body: one form, its three buttons named `choice`
/// (`continue`, `switch`, `cancel`). Nothing has the focus: a page another
/// program opened while the user was typing elsewhere must not take a
/// stray Enter as a yes.
pub fn confirm_body(lang: Lang, form: &ConfirmForm<'_>) -> String {
    let t = text(lang);
    let mut body = format!(
        "<h1>{heading}</h1><p class=\"client\">{continue_to} <strong>{client}</strong></p>\
         <p class=\"account\">{signed_in_as} <strong>{username}</strong></p>\
         <p class=\"note\">{note}</p><form method=\"post\" action=\"{action}\">",
        heading = escape(t.confirm_title),
        continue_to = escape(t.continue_to),
        client = escape(form.client),
        signed_in_as = escape(t.signed_in_as),
        username = escape(form.username),
        note = escape(t.confirm_note),
        action = escape(form.action),
    );
    push_hidden(&mut body, form.hidden);
    body.push_str(&format!(
        "<button type=\"submit\" name=\"choice\" value=\"continue\">{}</button>\
         <button type=\"submit\" name=\"choice\" value=\"switch\" class=\"secondary\">{}</button>\
         <button type=\"submit\" name=\"choice\" value=\"cancel\" class=\"secondary\">{}</button>\
         </form>",
        escape(t.confirm_button),
        escape(t.switch_button),
        escape(t.cancel_button),
    ));
    body
}

/// A page with a heading and one message.
pub fn message_body(heading: &str, message: &str) -> String {
    format!(
        "<h1>{}</h1><p class=\"note\">{}</p>",
        escape(heading),
        escape(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn the_preferred_language_wins_by_q_value() {
        assert_eq!(Lang::from_headers(&HeaderMap::new()), Lang::En);
        assert_eq!(
            Lang::from_headers(&accept("zh-CN,zh;q=0.9,en;q=0.8")),
            Lang::Zh
        );
        assert_eq!(Lang::from_headers(&accept("en-US,zh;q=0.5")), Lang::En);
        assert_eq!(Lang::from_headers(&accept("fr, zh-TW;q=0.7")), Lang::Zh);
        assert_eq!(Lang::from_headers(&accept("de")), Lang::En);
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
