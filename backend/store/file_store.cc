#include "backend/store/file_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace tandem::backend {
namespace {

StoreError from_errno(const std::string& what, int err) {
  StoreErrc c = err == ENOSPC ? StoreErrc::kNoSpace
                : err == ENOENT ? StoreErrc::kNotFound
                : err == EEXIST ? StoreErrc::kExists
                                : StoreErrc::kIo;
  return StoreError{c, what + ": " + std::strerror(err)};
}

// Makes a create/remove durable: the directory entry itself must reach the disk.
void sync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

StoreResult<void> FileStore::init() const {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return core::fail(StoreError{StoreErrc::kIo, "cannot create " + dir_ + ": " + ec.message()});
  return {};
}

std::string FileStore::path_of(const std::string& volume_id) const {
  return dir_ + "/" + volume_id + ".img";
}

StoreResult<void> FileStore::create(const std::string& volume_id, uint64_t bytes) const {
  auto path = path_of(volume_id);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return core::fail(from_errno(path, errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return core::fail(from_errno(path, err));
  }
  ::fsync(fd);
  ::close(fd);
  sync_dir(dir_);
  return {};
}

StoreResult<void> FileStore::grow(const std::string& volume_id, uint64_t bytes) const {
  auto path = path_of(volume_id);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return core::fail(from_errno(path, errno));
  if (bytes < static_cast<uint64_t>(st.st_size)) {
    return core::fail(StoreError{StoreErrc::kShrink, "volumes can only grow"});
  }
  if (::truncate(path.c_str(), static_cast<off_t>(bytes)) != 0) {
    return core::fail(from_errno(path, errno));
  }
  return {};
}

StoreResult<void> FileStore::remove(const std::string& volume_id) const {
  auto path = path_of(volume_id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return core::fail(from_errno(path, errno));
  sync_dir(dir_);
  return {};
}

bool FileStore::exists(const std::string& volume_id) const {
  struct stat st {};
  return ::stat(path_of(volume_id).c_str(), &st) == 0;
}

StoreResult<uint64_t> FileStore::free_bytes() const {
  struct statvfs vfs {};
  if (::statvfs(dir_.c_str(), &vfs) != 0) return core::fail(from_errno(dir_, errno));
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

StoreResult<uint64_t> FileStore::total_bytes() const {
  struct statvfs vfs {};
  if (::statvfs(dir_.c_str(), &vfs) != 0) return core::fail(from_errno(dir_, errno));
  return static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
}

}  // namespace tandem::backend
