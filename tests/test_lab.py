"""The CentOS 7 lab: the Vagrantfile and the script that provisions the VM.

The virtual machine cannot boot on this machine (there is no virtualization
for it), so these tests check everything else, with the real tools:

- Vagrant validates the Vagrantfile offline, and Vagrant's own loader says
  which box, providers, synced folder and provisioner the environment
  variables select;
- ``bash -n`` and shellcheck accept ``lab/provision.sh``, and run on a host
  that is not CentOS 7 it refuses before it changes anything;
- the provisioning steps that need no CentOS run for real: the vault repo
  file, the xfs ``ftype`` check, the overlay volume (a loop-mounted xfs that
  overlayfs then mounts on), the sudoers line.
"""

import configparser
import os
import shutil
import stat
import subprocess

import pytest

pytestmark = pytest.mark.course

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAGRANTFILE = os.path.join(REPO, "Vagrantfile")
PROVISION = os.path.join(REPO, "lab", "provision.sh")

# Vagrant's own Ruby API, loading the Vagrantfile exactly as `vagrant up` does,
# prints what the configuration came to.
SHOW_CONFIGURATION = r"""
require "json"
require "vagrant"
environment = Vagrant::Environment.new(cwd: ARGV.fetch(0))
vm = environment.vagrantfile.config.vm
shell = vm.provisioners.find { |provisioner| provisioner.type == :shell }
puts JSON.generate(
  box: vm.box,
  box_version: vm.box_version,
  box_check_update: vm.box_check_update,
  providers: vm.__providers,
  synced_folder: vm.synced_folders["/vagrant"],
  provision_path: shell.config.path,
  provision_environment: shell.config.env,
  virtualbox: vm.get_provider_config(:virtualbox).customizations)
"""


def require_tool(name, package):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package: {package}); "
                    "scripts/test.sh installs it")
    return path


def clean_environment(tmp_path, **settings):
    """The caller's environment without lab settings, plus ``settings``.

    VAGRANT_HOME and VAGRANT_DOTFILE_PATH point into ``tmp_path`` so Vagrant
    writes nothing into the home directory or the repository.
    """
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("MINIDOCKER_")}
    environment.update(
        VAGRANT_HOME=str(tmp_path / "vagrant-home"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "vagrant-dotfile"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
    )
    environment.update(settings)
    return environment


def vagrant(tmp_path, *arguments, **settings):
    command = [require_tool("vagrant", "vagrant"), *arguments]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=clean_environment(tmp_path, **settings))


def vagrant_configuration(tmp_path, **settings):
    """What Vagrant's loader makes of the Vagrantfile under ``settings``."""
    import json

    vagrant_path = require_tool("vagrant", "vagrant")
    with open(vagrant_path, "rb") as launcher:
        first_line = launcher.readline().decode(errors="replace")
    if not (first_line.startswith("#!") and "ruby" in first_line):
        pytest.skip(f"{vagrant_path} is not a Ruby script (HashiCorp's build "
                    "bundles its own Ruby); Debian's vagrant package is")
    ruby = first_line[2:].split()[0]
    script = tmp_path / "show-configuration.rb"
    script.write_text(SHOW_CONFIGURATION)
    result = subprocess.run([ruby, str(script), REPO], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env=clean_environment(tmp_path, **settings))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def virtualbox_setting(configuration, flag):
    """The value the VirtualBox provider passes to ``VBoxManage modifyvm FLAG``."""
    for _, command in configuration["virtualbox"]:
        if command[:2] == ["modifyvm", "id"] and command[2] == flag:
            return str(command[3])
    return None


def provision(snippet, input=None, **settings):
    """Source lab/provision.sh in bash (which runs nothing), then run ``snippet``."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("MINIDOCKER_LAB_")}
    environment.update(settings)
    return subprocess.run(["bash", "-c", f'source "$0"\n{snippet}', PROVISION], input=input,
                          capture_output=True, text=True, timeout=120, env=environment)


# --- the Vagrantfile ----------------------------------------------------------

def test_vagrantfile_validates_offline(tmp_path):
    local_data = os.path.join(REPO, ".vagrant")
    existed = os.path.exists(local_data)
    result = vagrant(tmp_path, "validate", "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
    assert os.path.exists(local_data) == existed, "the test must leave no .vagrant behind"


@pytest.mark.parametrize("provider", ["virtualbox", "libvirt"])
def test_vagrantfile_validates_for_each_provider(tmp_path, provider):
    result = vagrant(tmp_path, "validate", "--ignore-provider", MINIDOCKER_PROVIDER=provider)
    assert result.returncode == 0, result.stdout + result.stderr


def test_libvirt_provider_accepts_the_labs_settings(tmp_path):
    # --ignore-provider skips the provider's own checks; with vagrant-libvirt
    # installed they can run too (no libvirt daemon is needed to validate).
    plugins = vagrant(tmp_path, "plugin", "list")
    if "vagrant-libvirt" not in plugins.stdout:
        pytest.skip("the vagrant-libvirt plugin is not installed (Debian package: vagrant-libvirt)")
    result = vagrant(tmp_path, "validate", VAGRANT_DEFAULT_PROVIDER="libvirt",
                     MINIDOCKER_PROVIDER="libvirt", MINIDOCKER_MEMORY="3072")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ignoring provider config" not in result.stdout


def test_unknown_provider_is_refused_by_name(tmp_path):
    result = vagrant(tmp_path, "validate", "--ignore-provider", MINIDOCKER_PROVIDER="hyperv")
    assert result.returncode != 0
    assert "MINIDOCKER_PROVIDER=hyperv" in result.stderr
    assert "virtualbox and libvirt" in result.stderr


def test_a_size_that_is_not_a_number_is_refused_by_name(tmp_path):
    result = vagrant(tmp_path, "validate", "--ignore-provider", MINIDOCKER_MEMORY="2G")
    assert result.returncode != 0
    assert "MINIDOCKER_MEMORY=2G" in result.stderr


def test_default_lab_is_a_pinned_centos_7_4_box(tmp_path):
    configuration = vagrant_configuration(tmp_path)
    assert configuration["box"] == "centos/7"
    assert configuration["box_version"] == "1801.02"  # CentOS 7.4.1708, kernel 3.10.0-693
    assert configuration["box_check_update"] is False
    assert configuration["providers"] == ["virtualbox", "libvirt"]
    assert configuration["provision_path"] == "lab/provision.sh"
    assert virtualbox_setting(configuration, "--memory") == "2048"
    assert virtualbox_setting(configuration, "--cpus") == "2"
    folder = configuration["synced_folder"]
    assert folder["type"] == "rsync"
    assert ".venv/" in folder["rsync__exclude"]  # the host's virtualenv is not the guest's


def test_environment_selects_another_box_provider_and_size(tmp_path):
    configuration = vagrant_configuration(
        tmp_path, MINIDOCKER_BOX="generic/centos7", MINIDOCKER_BOX_VERSION="",
        MINIDOCKER_PROVIDER="libvirt", MINIDOCKER_MEMORY="4096", MINIDOCKER_CPUS="4",
        MINIDOCKER_SYNC_TYPE="nfs")
    assert configuration["box"] == "generic/centos7"
    assert configuration["box_version"] is None
    assert configuration["providers"] == ["libvirt", "virtualbox"]
    assert virtualbox_setting(configuration, "--memory") == "4096"
    assert virtualbox_setting(configuration, "--cpus") == "4"
    assert configuration["synced_folder"]["type"] == "nfs"


def test_lab_settings_and_only_those_reach_the_provisioner(tmp_path):
    configuration = vagrant_configuration(
        tmp_path, MINIDOCKER_LAB_VOLUME="always", MINIDOCKER_LAB_PYTHON="3.13",
        MINIDOCKER_BOX="centos/7")
    assert configuration["provision_environment"] == {
        "MINIDOCKER_LAB_VOLUME": "always", "MINIDOCKER_LAB_PYTHON": "3.13"}


# --- the provisioning script: static checks -----------------------------------

def test_provision_script_parses():
    result = subprocess.run(["bash", "-n", PROVISION], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_provision_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck", "shellcheck")
    result = subprocess.run([shellcheck, "--shell=bash", PROVISION],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provision_script_is_executable():
    assert os.stat(PROVISION).st_mode & stat.S_IXUSR


def test_sourcing_the_script_runs_nothing():
    result = provision("declare -F main needs_overlay_volume make_overlay_volume")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["main", "needs_overlay_volume", "make_overlay_volume"]
    assert result.stderr == ""


def test_on_a_host_that_is_not_centos_7_it_stops_before_changing_anything():
    if os.path.exists("/etc/centos-release"):
        pytest.skip("this host is CentOS: running the script here would provision it")
    result = subprocess.run(["bash", PROVISION], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "not CentOS 7" in result.stderr
    assert "==> minidocker lab" not in result.stdout  # no step started


# --- the provisioning script: its steps, run for real -------------------------

def test_yum_repositories_point_at_the_vault(tmp_path):
    repo_file = tmp_path / "CentOS-Base.repo"
    result = provision(f"write_vault_repositories {repo_file}")
    assert result.returncode == 0, result.stderr
    repositories = configparser.ConfigParser(interpolation=None)
    repositories.read(repo_file)
    assert repositories.sections() == ["base", "updates", "extras"]
    assert [repositories[name]["baseurl"] for name in repositories.sections()] == [
        "http://vault.centos.org/7.9.2009/os/$basearch/",
        "http://vault.centos.org/7.9.2009/updates/$basearch/",
        "http://vault.centos.org/7.9.2009/extras/$basearch/",
    ]
    for name in repositories.sections():
        assert repositories[name]["gpgcheck"] == "1"
        assert repositories[name]["gpgkey"] == "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7"
        assert "mirrorlist" not in repositories[name]


def test_vault_release_and_address_can_be_chosen(tmp_path):
    repo_file = tmp_path / "CentOS-Base.repo"
    result = provision(f"write_vault_repositories {repo_file}",
                       MINIDOCKER_LAB_VAULT_RELEASE="7.4.1708",
                       MINIDOCKER_LAB_VAULT_URL="http://127.0.0.1:8080/centos")
    assert result.returncode == 0, result.stderr
    repositories = configparser.ConfigParser(interpolation=None)
    repositories.read(repo_file)
    assert repositories["base"]["baseurl"] == "http://127.0.0.1:8080/centos/7.4.1708/os/$basearch/"


def make_xfs_image(path, size="512M", *options):
    subprocess.run(["truncate", "--size", size, str(path)], check=True)
    subprocess.run([require_tool("mkfs.xfs", "xfsprogs"), "-q", *options, str(path)],
                   check=True, capture_output=True)


@pytest.mark.parametrize("options, has_ftype", [
    (("-n", "ftype=1"), True),
    (("-m", "crc=0", "-n", "ftype=0"), False),  # what old installers made
])
def test_xfs_ftype_is_read_from_xfs_info(tmp_path, options, has_ftype):
    image = tmp_path / "disk.xfs"
    make_xfs_image(image, "512M", *options)
    # xfs_info reads an image file directly, so the ftype=0 filesystem need not
    # be mountable (kernels without CONFIG_XFS_SUPPORT_V4 refuse it).
    report = subprocess.run(["xfs_info", str(image)], capture_output=True, text=True, check=True)
    result = provision("xfs_info_has_ftype", input=report.stdout)
    assert (result.returncode == 0) is has_ftype, report.stdout


def test_a_directory_on_this_hosts_filesystem_needs_no_volume(tmp_path):
    result = provision(f"if needs_overlay_volume {tmp_path}; then echo needed; else echo fine; fi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fine"


def test_auto_mode_on_a_filesystem_with_d_type_just_makes_the_engine_root(tmp_path):
    engine_root = tmp_path / "minidocker"
    result = provision(f"ENGINE_ROOT={engine_root}; prepare_engine_root")
    assert result.returncode == 0, result.stderr
    assert "d_type" in result.stdout
    assert engine_root.is_dir()
    assert not os.path.ismount(engine_root)


def test_an_unknown_volume_mode_is_refused(tmp_path):
    result = provision(f"ENGINE_ROOT={tmp_path}/root; prepare_engine_root",
                       MINIDOCKER_LAB_VOLUME="sometimes")
    assert result.returncode == 1
    assert "MINIDOCKER_LAB_VOLUME=sometimes" in result.stderr
    assert not (tmp_path / "root").exists()


@pytest.fixture
def volume_paths(tmp_path):
    """An image path, a mount point and an fstab; unmounts whatever is left."""
    paths = (tmp_path / "volume.xfs", tmp_path / "engine-root", tmp_path / "fstab")
    paths[2].write_text("# test fstab\n")
    yield paths
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith(str(tmp_path))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True)
    assert not points, f"the test left mounts behind: {points}"


def test_overlay_volume_is_made_recorded_and_usable_by_overlay(volume_paths):
    require_tool("mkfs.xfs", "xfsprogs")
    image, mount_point, fstab = volume_paths
    step = f"make_overlay_volume {image} {mount_point} 512M {fstab}"

    first = provision(step)
    assert first.returncode == 0, first.stderr
    assert os.path.ismount(mount_point)
    report = subprocess.run(["xfs_info", str(mount_point)], capture_output=True, text=True)
    assert "ftype=1" in report.stdout
    assert os.stat(image).st_blocks * 512 < 512 * 2**20  # sparse
    again = provision(step)
    assert again.returncode == 0, again.stderr
    assert "already mounted" in again.stdout
    assert fstab.read_text().splitlines()[1:] == [f"{image} {mount_point} xfs loop 0 0"]
    check = provision(f"if needs_overlay_volume {mount_point}; then echo needed; else echo fine; fi")
    assert check.stdout.strip() == "fine", check.stderr

    # The proof that matters: overlayfs mounts there and records a whiteout.
    for name in ("lower", "upper", "work", "merged"):
        (mount_point / name).mkdir()
    (mount_point / "lower" / "gone").write_text("from the lower layer\n")
    merged = mount_point / "merged"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={mount_point}/lower,upperdir={mount_point}/upper,"
                    f"workdir={mount_point}/work", str(merged)], check=True)
    try:
        (merged / "gone").unlink()
        whiteout = os.lstat(mount_point / "upper" / "gone")
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    subprocess.run(["umount", str(mount_point)], check=True)


def test_overlay_volume_refuses_to_hide_existing_files(volume_paths):
    image, mount_point, fstab = volume_paths
    mount_point.mkdir()
    (mount_point / "precious").write_text("keep me\n")
    result = provision(f"make_overlay_volume {image} {mount_point} 512M {fstab}")
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert not image.exists()
    assert not os.path.ismount(mount_point)
    assert fstab.read_text() == "# test fstab\n"


def test_sudoers_line_lets_sudo_find_local_tools(tmp_path):
    require_tool("visudo", "sudo")
    sudoers_file = tmp_path / "minidocker-lab"
    result = provision(f"let_sudo_find_local_tools {sudoers_file}")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(sudoers_file).st_mode) == 0o440
    line = sudoers_file.read_text().strip()
    assert line.startswith("Defaults secure_path = ")
    assert "/usr/local/bin" in line.split("=", 1)[1].strip().split(":")
