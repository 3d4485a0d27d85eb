//! The dashboard's front end, built from `web/` (`npm run build` writes
//! `web/dist`) and embedded into the binary when hive-c0re is compiled (see
//! `build.rs`), so an installed binary serves it without the source tree.

mod built {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// A file every build has; without it the front end is not built.
const MARKER: &str = "hive.html";

/// The front end's files, by name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Assets {
    files: &'static [(&'static str, &'static [u8])],
}

impl Assets {
    /// What was built when this binary was compiled.
    pub fn embedded() -> Self {
        Self {
            files: built::FILES,
        }
    }

    /// A given set of files (tests).
    #[cfg(test)]
    pub fn of(files: &'static [(&'static str, &'static [u8])]) -> Self {
        Self { files }
    }

    /// The file called `name`.
    pub fn get(&self, name: &str) -> Option<&'static [u8]> {
        self.files.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// True when the front end was built before compiling.
    pub fn is_built(&self) -> bool {
        self.get(MARKER).is_some()
    }
}

/// The `Content-Type` of a served file, by extension; None for what is never served.
pub(crate) fn content_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "woff2" => "font/woff2",
        _ => return None,
    })
}
