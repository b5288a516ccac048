//! The web UI's pages: one application page that draws the queries, a query's stages and
//! tasks, and the executors from the JSON API (polling it, so what runs moves on screen),
//! and the login form. Everything is served by the scheduler itself: no CDN, no build
//! step, no library.

use crate::query_history::SessionIdentity;

const APP: &str = include_str!("web_ui/app.html");
const LOGIN: &str = include_str!("web_ui/login.html");

/// The application page, for `viewer` (`None`: a server without logins).
pub(crate) fn app_page(viewer: Option<&SessionIdentity>) -> String {
    let who = match viewer.and_then(|v| v.user.as_deref()) {
        Some(user) => escape_html(user),
        None => String::new(),
    };
    APP.replace("{{USER}}", &who)
}

/// The login form, with why the last attempt failed.
pub(crate) fn login_page(error: Option<&str>) -> String {
    let message = error.map(escape_html).unwrap_or_default();
    LOGIN.replace("{{ERROR}}", &message)
}

fn escape_html(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors_are_escaped() {
        let viewer = SessionIdentity {
            user: Some("<b>eve</b>".to_string()),
            session: String::new(),
            admin: false,
            restricted: false,
        };
        let page = app_page(Some(&viewer));
        assert!(page.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(!page.contains("<b>eve"));
        assert!(login_page(Some("a \"bad\" <try>")).contains("a &quot;bad&quot; &lt;try&gt;"));
    }
}
