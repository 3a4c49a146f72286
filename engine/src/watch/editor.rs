//! File names that editors and other desktop tools write beside the files a
//! user edits: swap, lock, backup and temporary files. A change to one of
//! them is never a change to the project.

/// Suffixes of temporary files written before an atomic save renames them
/// over the real file, and of other tools' scratch files.
const TEMP_SUFFIXES: &[&str] = &[
    // Any tool's temporary file.
    ".tmp",
    // JetBrains IDEs' safe write: `x___jb_tmp___` becomes `x`, and the old
    // `x` is kept as `x___jb_old___` until the rename succeeded.
    "___jb_tmp___",
    "___jb_old___",
    // VS Code's atomic save.
    ".vsctmp",
    // Kate's swap file, `.x.kate-swp`.
    ".kate-swp",
    // Chromium-based browsers and editors saving through the File System
    // Access API.
    ".crswap",
];

/// Names that are scratch files whatever their folder.
const SCRATCH_NAMES: &[&str] = &[
    // macOS Finder's folder settings.
    ".DS_Store",
];

/// The name vim writes and deletes to test that it may create files in a
/// folder. When that name exists, vim adds 123 until it finds a free one.
const VIM_WRITE_TEST: u32 = 4913;
const VIM_WRITE_TEST_STEP: u32 = 123;
/// How many of vim's successive write-test names are recognised.
const VIM_WRITE_TEST_TRIES: u32 = 100;

/// Returns whether `name`, the last component of a path, is a file that an
/// editor or desktop tool writes beside the file being edited:
///
/// - vim and nano swap files, `.x.swp`, `.x.swo` and so on down to `.x.swa`,
///   and vim's write test `4913`;
/// - backups `x~` (vim, emacs, gedit);
/// - emacs auto-saves `#x#` and lock links `.#x`;
/// - LibreOffice locks `.~lock.x#` and Microsoft Office owner files `~$x`;
/// - gedit's and GLib's `.goutputstream-XXXXXX`;
/// - any name ending in one of [`TEMP_SUFFIXES`] or equal to one of
///   [`SCRATCH_NAMES`].
///
/// A temporary name this list misses still counts once: see the rename
/// handling in [`super::batch`].
pub fn is_editor_file(name: &str) -> bool {
    is_swap_file(name)
        || is_vim_write_test(name)
        || name.ends_with('~')
        || (name.len() > 2 && name.starts_with('#') && name.ends_with('#'))
        || name.starts_with(".#")
        || name.starts_with(".~lock.")
        || name.starts_with("~$")
        || name.starts_with(".goutputstream-")
        || TEMP_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
        || SCRATCH_NAMES.contains(&name)
}

/// vim names a swap file `.x.swp` and, when that exists, `.x.swo`,
/// `.x.swn` and so on backwards to `.x.saa`. Only the `.sw?` range is
/// matched: the rest would need 16 vim sessions on one file.
fn is_swap_file(name: &str) -> bool {
    let Some(stem) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, extension)) = stem.rsplit_once('.') else {
        return false;
    };
    let bytes = extension.as_bytes();
    !base.is_empty()
        && bytes.len() == 3
        && bytes.starts_with(b"sw")
        && bytes[2].is_ascii_lowercase()
}

fn is_vim_write_test(name: &str) -> bool {
    let Ok(number) = name.parse::<u32>() else {
        return false;
    };
    // Reject `+4913` and `04913`, which parse to the same number.
    if name.len() != number.to_string().len() || number < VIM_WRITE_TEST {
        return false;
    }
    let offset = number - VIM_WRITE_TEST;
    offset.is_multiple_of(VIM_WRITE_TEST_STEP)
        && offset / VIM_WRITE_TEST_STEP < VIM_WRITE_TEST_TRIES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_files_are_recognised() {
        let names = [
            ".main.py.swp",
            ".main.py.swo",
            ".main.py.swx",
            "4913",
            "5036",
            "main.py~",
            "#main.py#",
            ".#main.py",
            "main.py___jb_tmp___",
            "main.py___jb_old___",
            "build.tmp",
            ".~lock.report.odt#",
            "~$report.docx",
            ".goutputstream-A1B2C3",
            "main.py.vsctmp",
            ".main.py.kate-swp",
            "main.py.crswap",
            ".DS_Store",
        ];
        for name in names {
            assert!(is_editor_file(name), "{name} is an editor file");
        }
    }

    #[test]
    fn project_files_are_not_editor_files() {
        let names = [
            "main.py",
            ".gitignore",
            "swp",
            ".swp",
            "notes.swp",
            "#",
            "##",
            "4912",
            "4914",
            "04913",
            "2024",
            "tmp",
            "template.tmpl",
            "danubefile.py",
        ];
        for name in names {
            assert!(!is_editor_file(name), "{name} is a project file");
        }
    }
}
