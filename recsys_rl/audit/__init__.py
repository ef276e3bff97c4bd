"""The bias audit: who and what a policy's banners expose, as pure functions over tensors.

One module per figure: ``exposure`` (examination-weighted exposure per product under the served
Plackett-Luce distribution), ``concentration`` (Gini, Lorenz curve, coverage, long-tail share),
``popularity`` (average recommended popularity and its lift over the users' histories),
``calibration`` (category mix of banners against histories, Steck 2018), ``merit`` (exposure against
merit for head and tail, Singh & Joachims 2018), ``homogenisation`` (Jaccard between users' banners,
Chaney et al. 2018), ``segments`` (who gains and who pays); ``world`` is what the audit needs to know
about the shop, ``report`` puts them together.
"""
