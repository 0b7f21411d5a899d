//! The chat templates `--chat-template NAME` selects, as Jinja.

/// llama.cpp's fallback when a model has no template.
pub const CHATML: &str = "{%- for message in messages -%}
  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}";

/// Gemma's turn format; a system message is folded into the first user turn.
const GEMMA: &str = "{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
  {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
  {%- set loop_messages = messages[1:] -%}
{%- else -%}
  {%- set first_user_prefix = '' -%}
  {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
  {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
  {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{ '<start_of_turn>model\\n' }}
{%- endif -%}";

const LLAMA3: &str = "{{ bos_token }}
{%- for message in messages -%}
  {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif -%}";

const PHI3: &str = "{%- for message in messages -%}
  {{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{ '<|assistant|>\\n' }}
{%- endif -%}";

/// llama2: no system role (its text opens the first turn), no generation prompt.
const LLAMA2: &str = "{%- set ns = namespace(inside=true) -%}
{{- '[INST] ' -}}
{%- for message in messages -%}
  {%- if not ns.inside -%}{%- set ns.inside = true -%}{{- '[INST] ' -}}{%- endif -%}
  {%- if message['role'] == 'system' -%}{{- message['content'] + '\n' -}}
  {%- elif message['role'] == 'user' -%}{{- message['content'] + ' [/INST]' -}}
  {%- else -%}{{- message['content'] + '</s>' -}}{%- set ns.inside = false -%}
  {%- endif -%}
{%- endfor -%}";

const ZEPHYR: &str = "{%- for message in messages -%}
  {{- '<|' + message['role'] + '|>\n' + message['content'] + '<|endoftext|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}";

/// Mistral's v7 format (no generation prompt).
const MISTRAL_V7: &str = "{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{{- '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' -}}
  {%- elif message['role'] == 'user' -%}{{- '[INST] ' + message['content'] + '[/INST]' -}}
  {%- else -%}{{- ' ' + message['content'] + '</s>' -}}
  {%- endif -%}
{%- endfor -%}";

/// deepseek-coder's instruction format.
const DEEPSEEK: &str = "{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{{- message['content'] -}}
  {%- elif message['role'] == 'user' -%}{{- '### Instruction:\n' + message['content'] + '\n' -}}
  {%- elif message['role'] == 'assistant' -%}{{- '### Response:\n' + message['content'] + '\n<|EOT|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '### Response:\n' -}}{%- endif -%}";

const VICUNA: &str = "{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{{- message['content'] + '\n\n' -}}
  {%- elif message['role'] == 'user' -%}{{- 'USER: ' + message['content'] + '\n' -}}
  {%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' + message['content'] + '</s>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}";

const COMMAND_R: &str = "{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}{{- '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + message['content'] | trim + '<|END_OF_TURN_TOKEN|>' -}}
  {%- elif message['role'] == 'user' -%}{{- '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + message['content'] | trim + '<|END_OF_TURN_TOKEN|>' -}}
  {%- elif message['role'] == 'assistant' -%}{{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' + message['content'] | trim + '<|END_OF_TURN_TOKEN|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' -}}{%- endif -%}";

/// Built-in templates by the names `--chat-template` accepts (llama.cpp's
/// names; the turn formats of its llama-chat.cpp written as Jinja).
pub fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "chatml" => CHATML,
        "gemma" => GEMMA,
        "llama3" => LLAMA3,
        "phi3" => PHI3,
        "llama2" => LLAMA2,
        "zephyr" => ZEPHYR,
        "mistral-v7" => MISTRAL_V7,
        "deepseek" => DEEPSEEK,
        "vicuna" => VICUNA,
        "command-r" => COMMAND_R,
        _ => return None,
    })
}

pub const BUILTIN_NAMES: &str = "chatml, gemma, llama3, phi3, llama2, zephyr, mistral-v7, deepseek, vicuna, command-r";
