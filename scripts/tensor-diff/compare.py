# Compare tensor dumps (see run.sh): per tensor, the share of bit-identical
# elements, the largest absolute difference and where it is.
import numpy as np, os, sys, re
# llama.cpp names several stages alike (Qcur: product, + bias, rope): keep all,
# and compare with the stage that matches best
ref={}
for f in sorted(os.listdir(os.environ.get('DUMP_ROOT','/tmp/dump')+'/ref')):
    ref.setdefault(f[5:-4],[]).append(f)
def key(n):
    m=re.match(r'(.*)-(\d+)$',n); 
    return (int(m.group(2)),n) if m else (999,n)
order=['attn_norm','Qcur','Kcur','Vcur','kqv_out','ffn_norm','ffn_gate','ffn_up','ffn_swiglu','ffn_out','l_out']
names=[f[:-4] for f in os.listdir(os.environ.get('DUMP_ROOT','/tmp/dump')+'/ours')]
def k2(n):
    m=re.match(r'(.*)-(\d+)$',n)
    return (int(m.group(2)), order.index(m.group(1)) if m.group(1) in order else 99) if m else (999,0)
lim=int(sys.argv[1]) if len(sys.argv)>1 else 3
for n in sorted(names,key=k2):
    if k2(n)[0]>lim and k2(n)[0]!=999: continue
    o=np.fromfile(os.environ.get('DUMP_ROOT','/tmp/dump')+f'/ours/{n}.bin',dtype=np.float32)
    if n not in ref: print(n,'no ref'); continue
    best=None
    for k,f in enumerate(ref[n]):
        raw=open(os.environ.get('DUMP_ROOT','/tmp/dump')+'/ref/'+f,'rb').read()
        r=np.frombuffer(raw[32:],dtype=np.float32)
        if r.size>o.size: r=r[-o.size:]
        if r.size!=o.size: continue
        eq=np.mean(r==o)
        if best is None or eq>best[0]: best=(eq,k,r)
    if best is None:
        print(n,'size',o.size,'matches no stage'); continue
    eq,k,r=best
    d=np.abs(r-o)
    stage=f' (stage {k+1}/{len(ref[n])})' if len(ref[n])>1 else ''
    print(f'{n:16s} eq {eq*100:6.2f}%  maxdiff {d.max():.3g} at {d.argmax()}  relmax {d.max()/np.abs(r).max():.3g}{stage}')
