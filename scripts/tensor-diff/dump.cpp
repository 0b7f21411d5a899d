// Debugging aid: run one forward pass of llama.cpp on a prompt and write every
// contiguous F32 intermediate tensor to $DUMP_DIR/NNNN_name.bin (4 x int64 dims, then data).
// With a third argument "step", the tensors of the one-token step after the
// prompt (its greedy token) instead. Built and run by scripts/tensor-diff/run.sh.
#include "llama.h"
#include "ggml.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
static bool dumping = true;
static bool cb(struct ggml_tensor * t, bool ask, void *) {
    if (ask) return true;
    if (!dumping) return true;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return true;
    std::string name = ggml_get_name(t);
    for (auto &c : name) if (c == '/' || c == ' ' || c == '(' || c == ')') c = '_';
    static int seq = 0; char buf[16]; snprintf(buf, sizeof buf, "%04d_", seq++); std::string p = std::string(getenv("DUMP_DIR")) + "/" + std::string(buf) + name + ".bin";
    FILE *f = fopen(p.c_str(), "wb");
    int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
    fwrite(ne, 8, 4, f);
    fwrite(t->data, 1, ggml_nbytes(t), f);
    fclose(f);
    return true;
}
int main(int argc, char **argv) {
    llama_backend_init();
    auto mp = llama_model_default_params();
    llama_model *m = llama_model_load_from_file(argv[1], mp);
    auto cp = llama_context_default_params();
    cp.n_ctx = 2048; cp.n_threads = 2; cp.n_threads_batch = 2;
    cp.swa_full = false; // as llama.cpp's tools (common_params), not the API default
    cp.cb_eval = cb; cp.cb_eval_user_data = nullptr;
    llama_context *ctx = llama_init_from_model(m, cp);
    const llama_vocab *v = llama_model_get_vocab(m);
    std::vector<llama_token> toks(4096);
    int n = llama_tokenize(v, argv[2], strlen(argv[2]), toks.data(), toks.size(), true, true);
    toks.resize(n);
    for (auto t : toks) fprintf(stderr, "%d ", t);
    fprintf(stderr, "\n");
    bool step = argc > 3 && strcmp(argv[3], "step") == 0;
    dumping = !step;
    llama_decode(ctx, llama_batch_get_one(toks.data(), n));
    if (step) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        llama_token best = 0;
        for (llama_token i = 1; i < llama_vocab_n_tokens(v); i++) if (logits[i] > logits[best]) best = i;
        fprintf(stderr, "step token %d\n", best);
        dumping = true;
        llama_decode(ctx, llama_batch_get_one(&best, 1));
    }
    return 0;
}
