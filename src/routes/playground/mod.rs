//! `GET /playground`: one self-contained page to try the agent from a browser (prompt,
//! the answer streamed as it arrives, every other event beside it, request id, time to
//! the first event and in total, a token field, a switch between `/agent`, `/stream`
//! and `/v1/chat/completions`), and its script at `/playground/app.js`.
//!
//! Static bytes compiled in: no CDN, nothing inline that agentd's own CSP would block
//! (the script is a file of this origin). Off with `PLAYGROUND=false` (404). It must
//! never talk to anything but this server's own routes.

use crate::http::{HttpError, Reply};

const PAGE: &[u8] = include_bytes!("index.html");
const SCRIPT: &[u8] = include_bytes!("app.js");

/// `GET /playground` and `GET /playground/app.js`.
pub(crate) fn serve(enabled: bool, path: &str) -> Result<Reply, HttpError> {
    if !enabled {
        return Err(HttpError::NotFound);
    }
    if path.trim_end_matches('/').ends_with("app.js") {
        Ok(Reply::file("text/javascript; charset=utf-8", SCRIPT))
    } else {
        Ok(Reply::file("text/html; charset=utf-8", PAGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_from_this_origin_and_nothing_inline() {
        let page = std::str::from_utf8(PAGE).unwrap();
        assert!(page.contains(r#"<script src="/playground/app.js"></script>"#));
        assert_eq!(page.matches("<script").count(), 1, "no inline script");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
        assert!(serve(false, "/playground").is_err());
        assert_eq!(serve(true, "/playground").unwrap().status, 200);
    }
}
