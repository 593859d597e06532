#!/usr/bin/env bash
# The real-GPU check: run on a GPU host, from a checkout of this project, with ansible-core on the PATH.
#   scripts/gpu-check.sh [OUTDIR]
# 1. captures nvidia-smi's answers (the unit tests' fixtures come from this);
# 2. runs playbooks/gpu_check.yml against localhost: GPU discovery, the nvidia_driver role's decision
#    (the wanted driver is loaded: nothing to do), vllm_server's GPU preflight with a model that fits;
# 3. on several GPUs: a model that fits only across all of them passes with all, is refused on one;
# 4. runs it again with three wrong inputs, each of which must be refused with its message:
#    a GPU index that does not exist, a model too large for the GPU, an image CUDA newer than the driver.
# Read-only: nothing on the host is installed or changed. Exit status 0 when every step behaved.
set -u
out=${1:-/tmp/gpu-check}
mkdir -p "$out"
export ANSIBLE_CONFIG=$PWD/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
models=$(mktemp -d /tmp/gpu-check-models.XXXX)
status=0

nvidia-smi > "$out/smi.txt" 2>&1
nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.free,compute_cap,driver_version,persistence_mode \
  --format=csv,noheader,nounits > "$out/query.txt" 2>&1

play() {
  ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=$(command -v python3)" \
    -e "gpu_check_model_root=$models" playbooks/gpu_check.yml "$@"
}
# weights as sparse files: their size is what preflight reads, and they take no disk
mkdir -p "$models/fits" "$models/too-large"
truncate -s 14G "$models/fits/model.safetensors"
truncate -s 150G "$models/too-large/model-00001-of-00002.safetensors"
truncate -s 150G "$models/too-large/model-00002-of-00002.safetensors"

echo "== the check, with a 14 GiB model that fits =="
if play -e gpu_check_model_dir=fits > "$out/playbook.txt" 2>&1; then
  echo "PASS: discovery, driver check (nothing to do) and GPU preflight"
else
  echo "FAIL: the check itself failed"; status=1
fi
grep -E "msg:|driver_version|cuda_version|count:|name:|memory_total_mib|compute_capability|failed=" "$out/playbook.txt" | head -40

gpus=$(grep -c "^[0-9]" "$out/query.txt")
if [ "$gpus" -gt 1 ]; then
  # a model too large for one GPU that fits across all of them (tensor parallel over every GPU)
  mkdir -p "$models/across-all"
  truncate -s "$((gpus * 50))G" "$models/across-all/model.safetensors"
  all=$(seq -s, 0 $((gpus - 1)))
  echo "== every GPU ($all) for a $((gpus * 50)) GiB model =="
  if play -e gpu_check_model_dir=across-all -e "{\"vllm_server_gpus\": [$all]}" > "$out/playbook-all-gpus.txt" 2>&1 \
     && ! play -e gpu_check_model_dir=across-all > "$out/refused-one-gpu.txt" 2>&1; then
    echo "PASS: fits across $gpus GPUs, refused on GPU 0 alone"
  else
    echo "FAIL: the tensor-parallel estimate"; status=1
  fi
fi

refused() {  # name, expected words, extra arguments
  local name=$1 words=$2; shift 2
  if play "$@" > "$out/refused-$name.txt" 2>&1; then
    echo "FAIL: $name was not refused"; status=1
  elif tr -s ' \n' ' ' < "$out/refused-$name.txt" | sed "s/''/'/g" | grep -q "$words"; then
    echo "PASS: $name refused:"
    tr -s ' \n' ' ' < "$out/refused-$name.txt" | sed "s/''/'/g" | sed -n 's/.*FAILED! => .* msg: \(.*\) PLAY RECAP.*/  \1/p' | cut -c1-600
  else
    echo "FAIL: $name failed without the expected message ($words)"; tail -20 "$out/refused-$name.txt"; status=1
  fi
}
echo "== wrong inputs =="
refused gpu-index "vllm_server_gpus: GPU 3 does not exist" -e gpu_check_model_dir=fits -e '{"vllm_server_gpus": [0, 3]}'
refused model-too-large "the model's weights in" -e gpu_check_model_dir=too-large
refused driver-too-old "is too old for the image's CUDA" -e gpu_check_model_dir=fits -e vllm_server_image_cuda_version=13.1
rm -rf "$models"
exit $status
