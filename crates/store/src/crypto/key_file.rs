//! The encryption key kept in the data directory (`encryption.key`, mode 0600) when
//! `GATEWAY_ENCRYPTION_KEY` is not set.
//!
//! Creation is atomic even with two instances starting together: the key is written to a private
//! temporary file and hard-linked into place, which fails if the name exists; the loser reads the
//! winner's key. Rotation ([`write_rotated`]) replaces the file atomically (write, fsync,
//! rename) with the new key on the first line and the old keys on the lines after it, so a key
//! is never lost: the file always holds every key some stored secret may still be sealed with.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::Cipher;
use crate::StoreError;

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "encryption.key";

/// Returns the hex keys stored in `dir/encryption.key` (the primary first), creating the
/// directory and a fresh key (mode 0600) if the file is absent. A present but malformed file is
/// an error, never replaced.
pub fn load_or_create_key_file(dir: &Path) -> Result<Vec<String>, StoreError> {
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
        Ok(()) => Ok(vec![key_hex]),
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

fn validated(text: String) -> Result<Vec<String>, StoreError> {
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(StoreError::Crypto("the encryption key file is empty"));
    }
    for k in &keys {
        Cipher::from_hex(k)?;
    }
    Ok(keys)
}

/// Replaces `dir/encryption.key` with `keys` (the new primary first), atomically.
pub fn write_rotated(dir: &Path, keys: &[String]) -> Result<(), StoreError> {
    for k in keys {
        Cipher::from_hex(k)?;
    }
    let tmp = dir.join(format!(
        ".{KEY_FILE_NAME}.{}",
        uuid::Uuid::new_v4().simple()
    ));
    let written = write_private(&tmp, &keys.join("\n"))
        .and_then(|()| fs::rename(&tmp, dir.join(KEY_FILE_NAME)))
        .and_then(|()| fs::File::open(dir)?.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(StoreError::KeyFile)
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
        assert_eq!(first.len(), 1);
        Cipher::from_hex(&first[0])?;
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
    fn a_rotated_file_keeps_the_old_keys_after_the_new_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let first = load_or_create_key_file(dir.path())?;
        let (_, new) = Cipher::generate();
        let mut keys = vec![new.clone()];
        keys.extend(first.iter().cloned());
        write_rotated(dir.path(), &keys)?;
        assert_eq!(load_or_create_key_file(dir.path())?, keys);
        assert!(write_rotated(dir.path(), &["nope".into()]).is_err());
        assert_eq!(
            load_or_create_key_file(dir.path())?,
            keys,
            "a bad key is never written"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(key_file_path(dir.path()))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(fs::read_dir(dir.path())?.count(), 1, "no staging file left");
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
