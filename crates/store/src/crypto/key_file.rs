//! The encryption key kept in the data directory (`encryption.key`, mode 0600) when
//! `GATEWAY_ENCRYPTION_KEY` is not set.
//!
//! Creation is atomic even with two instances starting together: the key is written to a private
//! temporary file and hard-linked into place, which fails if the name exists; the loser reads the
//! winner's key. A file is never overwritten, because losing the key loses every provider key.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::Cipher;
use crate::StoreError;

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "encryption.key";

/// Returns the hex key stored in `dir/encryption.key`, creating the directory and a fresh key
/// (mode 0600) if the file is absent. A present but malformed file is an error, never replaced.
pub fn load_or_create_key_file(dir: &Path) -> Result<String, StoreError> {
    let path = dir.join(KEY_FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => return validated(text),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::KeyFile(e)),
    }
    fs::create_dir_all(dir).map_err(StoreError::KeyFile)?;
    let (_, key_hex) = Cipher::generate();
    let tmp = dir.join(format!(
        ".{KEY_FILE_NAME}.{}",
        uuid::Uuid::new_v4().simple()
    ));
    let linked = write_private(&tmp, &key_hex).and_then(|()| fs::hard_link(&tmp, &path));
    // The temporary name is only a staging step; failing to remove it loses nothing.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key_hex),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            validated(fs::read_to_string(&path).map_err(StoreError::KeyFile)?)
        }
        Err(e) => Err(StoreError::KeyFile(e)),
    }
}

/// The path [`load_or_create_key_file`] uses for `dir`.
pub fn key_file_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE_NAME)
}

fn validated(text: String) -> Result<String, StoreError> {
    let key_hex = text.trim().to_owned();
    Cipher::from_hex(&key_hex)?;
    Ok(key_hex)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn creates_once_then_loads_the_same_key() -> TestResult {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let first = load_or_create_key_file(&data)?;
        let second = load_or_create_key_file(&data)?;
        assert_eq!(first, second);
        Cipher::from_hex(&first)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key_file_path(&data))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = fs::read_dir(&data)?.count();
        assert_eq!(leftovers, 1, "only encryption.key remains");
        Ok(())
    }

    #[test]
    fn a_malformed_file_is_an_error_not_replaced() -> TestResult {
        let dir = tempfile::tempdir()?;
        fs::write(key_file_path(dir.path()), "not a key")?;
        assert!(matches!(
            load_or_create_key_file(dir.path()),
            Err(StoreError::Crypto(_))
        ));
        assert_eq!(fs::read_to_string(key_file_path(dir.path()))?, "not a key");
        Ok(())
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() -> TestResult {
        let dir = tempfile::tempdir()?;
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || load_or_create_key_file(&d).ok())
            })
            .collect();
        let mut keys = Vec::new();
        for h in handles {
            keys.push(h.join().ok().flatten());
        }
        let first = keys.first().cloned().flatten();
        assert!(first.is_some());
        assert!(keys.iter().all(|k| *k == first));
        Ok(())
    }
}
